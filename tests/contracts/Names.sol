// SPDX-License-Identifier: MIT
// Minimal ENS (registry, public resolver, universal resolver) and Farcaster IdRegistry for tests.
// web3.py 8 resolves names through the ENS Universal Resolver: resolve(bytes dnsName, bytes data)
// returns (bytes result, address resolver); findResolver(bytes) returns (address, bytes32, uint256).
// The public resolver also keeps text records (ENSIP-5, text(node, key)) and reverse names (ENSIP-3,
// name(node) on <addr>.addr.reverse), which web3's ENS.get_text and ENS.name read through resolve().
pragma solidity ^0.8.20;

contract ENSRegistry {
    mapping(bytes32 => address) public owner;
    mapping(bytes32 => address) public resolver;

    constructor() {
        owner[bytes32(0)] = msg.sender;
    }

    function setSubnodeOwner(bytes32 node, bytes32 label, address newOwner) external returns (bytes32 sub) {
        require(owner[node] == msg.sender, "not owner");
        sub = keccak256(abi.encodePacked(node, label));
        owner[sub] = newOwner;
    }

    function setResolver(bytes32 node, address r) external {
        require(owner[node] == msg.sender, "not owner");
        resolver[node] = r;
    }
}

contract PublicResolver {
    ENSRegistry public ens;
    mapping(bytes32 => address) private _addrs;
    mapping(bytes32 => mapping(string => string)) private _texts;
    mapping(bytes32 => string) private _names;

    constructor(ENSRegistry ens_) {
        ens = ens_;
    }

    function setAddr(bytes32 node, address a) external {
        require(ens.owner(node) == msg.sender, "not owner");
        _addrs[node] = a;
    }

    function addr(bytes32 node) external view returns (address payable) {
        return payable(_addrs[node]);
    }

    function setText(bytes32 node, string calldata key, string calldata value) external {
        require(ens.owner(node) == msg.sender, "not owner");
        _texts[node][key] = value;
    }

    function text(bytes32 node, string calldata key) external view returns (string memory) {
        return _texts[node][key];
    }

    function setName(bytes32 node, string calldata newName) external {
        require(ens.owner(node) == msg.sender, "not owner");
        _names[node] = newName;
    }

    function name(bytes32 node) external view returns (string memory) {
        return _names[node];
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 || id == 0x3b3b57de || id == 0x59d1d43c || id == 0x691f3431;
    }
}

contract UniversalResolver {
    error ResolverNotFound(bytes name);
    error ResolverError(bytes returnData);

    ENSRegistry public registry;

    constructor(ENSRegistry registry_) {
        registry = registry_;
    }

    function _namehash(bytes memory name, uint256 offset) internal pure returns (bytes32) {
        uint256 len = uint8(name[offset]);
        if (len == 0) return bytes32(0);
        bytes memory label = new bytes(len);
        for (uint256 i = 0; i < len; i++) label[i] = name[offset + 1 + i];
        return keccak256(abi.encodePacked(_namehash(name, offset + 1 + len), keccak256(label)));
    }

    function findResolver(bytes calldata name) public view returns (address, bytes32, uint256) {
        bytes32 node = _namehash(name, 0);
        return (registry.resolver(node), node, 0);
    }

    function resolve(bytes calldata name, bytes calldata data) external view returns (bytes memory, address) {
        (address r, , ) = findResolver(name);
        if (r == address(0)) revert ResolverNotFound(name);
        (bool ok, bytes memory ret) = r.staticcall(data);
        if (!ok) revert ResolverError(ret);
        return (ret, r);
    }
}

/// Farcaster IdRegistry's read side: custodyOf(fid).
contract IdRegistry {
    mapping(uint256 => address) public custodyOf;

    function register(uint256 fid, address custody) external {
        custodyOf[fid] = custody;
    }
}
