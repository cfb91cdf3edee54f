// SPDX-License-Identifier: MIT
// EIP-6492 off-chain validation: run as the init code of an eth_call (no `to`), it returns one byte,
// 0x01 (valid) or 0x00. Behaviour follows EIP-6492's reference "ValidateSigOffchain":
//  - a signature ending in the 32-byte magic suffix 0x6492…6492 is abi-decoded as
//    (address create2Factory, bytes factoryCalldata, bytes innerSignature); when the signer has no code yet
//    the factory is called with the calldata (the deploy happens only inside this simulated call);
//  - then the signer must have code and answer isValidSignature(hash, innerSignature) == 0x1626ba7e.
// EOAs are not handled here: the bridge checks those by ECDSA recovery before it gets this far.
pragma solidity ^0.8.20;

interface IERC1271 {
    function isValidSignature(bytes32 hash, bytes memory signature) external view returns (bytes4);
}

contract ValidateSigOffchain {
    bytes32 private constant SUFFIX = 0x6492649264926492649264926492649264926492649264926492649264926492;

    constructor(address signer, bytes32 hash, bytes memory signature) {
        bool ok = _check(signer, hash, signature);
        assembly {
            mstore(0, ok)
            return(31, 1)
        }
    }

    function _check(address signer, bytes32 hash, bytes memory signature) private returns (bool) {
        bytes memory inner = signature;
        uint256 n = signature.length;
        if (n >= 32) {
            bytes32 tail;
            assembly {
                tail := mload(add(add(signature, 32), sub(n, 32)))
            }
            if (tail == SUFFIX) {
                bytes memory wrapped = new bytes(n - 32);
                for (uint256 i = 0; i < n - 32; i++) wrapped[i] = signature[i];
                address factory;
                bytes memory factoryCalldata;
                (factory, factoryCalldata, inner) = abi.decode(wrapped, (address, bytes, bytes));
                if (signer.code.length == 0) {
                    (bool deployed, ) = factory.call(factoryCalldata);
                    if (!deployed) return false;
                }
            }
        }
        if (signer.code.length == 0) return false;
        try IERC1271(signer).isValidSignature(hash, inner) returns (bytes4 magic) {
            return magic == 0x1626ba7e;
        } catch {
            return false;
        }
    }
}
