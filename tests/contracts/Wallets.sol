// SPDX-License-Identifier: MIT
// Small smart wallets for the EIP-1271 / EIP-6492 tests.
pragma solidity ^0.8.20;

/// EIP-1271 wallet: a signature is valid when ecrecover(hash, sig) is the owner.
contract Wallet1271 {
    address public owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32 hash, bytes calldata sig) external view returns (bytes4) {
        if (sig.length != 65) return 0xffffffff;
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        address signer = ecrecover(hash, v, r, s);
        return (signer != address(0) && signer == owner) ? bytes4(0x1626ba7e) : bytes4(0xffffffff);
    }
}

/// A broken wallet: answers a value that is not the EIP-1271 magic (0x1626ba7e) even for its owner.
contract WrongMagicWallet {
    address public owner;

    constructor(address owner_) {
        owner = owner_;
    }

    function isValidSignature(bytes32, bytes calldata) external pure returns (bytes4) {
        return 0x1626ba7f;
    }
}

/// Counterfactual deployment (CREATE2) of Wallet1271, as an EIP-6492 "create2Factory".
contract WalletFactory {
    function deploy(address owner_, bytes32 salt) external returns (address wallet) {
        wallet = address(new Wallet1271{salt: salt}(owner_));
    }

    function addressOf(address owner_, bytes32 salt) external view returns (address) {
        bytes32 h = keccak256(
            abi.encodePacked(bytes1(0xff), address(this), salt, keccak256(abi.encodePacked(type(Wallet1271).creationCode, abi.encode(owner_))))
        );
        return address(uint160(uint256(h)));
    }
}
