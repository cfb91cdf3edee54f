// SPDX-License-Identifier: MIT
// A minimal stand-in for a Lens v3 Account (lens-protocol/lens-v3 Account.sol): owner(), account managers
// (isAccountManager, canExecuteTransactions, getAccountManagerPermissions) and NO EIP-1271.
pragma solidity ^0.8.20;

contract LensAccount {
    struct AccountManagerPermissions {
        bool canExecuteTransactions;
        bool canTransferTokens;
        bool canTransferNative;
        bool canSetMetadataURI;
    }

    address private _owner;
    mapping(address => AccountManagerPermissions) private _managers;

    constructor(address owner_) {
        _owner = owner_;
    }

    function owner() external view returns (address) {
        return _owner;
    }

    function transferOwnership(address newOwner) external {
        require(msg.sender == _owner, "not owner");
        _owner = newOwner;
    }

    function addAccountManager(address manager) external {
        require(msg.sender == _owner, "not owner");
        _managers[manager] = AccountManagerPermissions(true, false, false, false);
    }

    function removeAccountManager(address manager) external {
        require(msg.sender == _owner, "not owner");
        delete _managers[manager];
    }

    function isAccountManager(address manager) external view returns (bool) {
        return _managers[manager].canExecuteTransactions;
    }

    function canExecuteTransactions(address executor) external view returns (bool) {
        return _managers[executor].canExecuteTransactions || executor == _owner;
    }

    function getAccountManagerPermissions(address manager) external view returns (AccountManagerPermissions memory) {
        return _managers[manager];
    }
}
