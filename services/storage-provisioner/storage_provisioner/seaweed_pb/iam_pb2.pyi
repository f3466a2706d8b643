from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetConfigurationRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetConfigurationResponse(_message.Message):
    __slots__ = ("configuration",)
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    configuration: S3ApiConfiguration
    def __init__(self, configuration: _Optional[_Union[S3ApiConfiguration, _Mapping]] = ...) -> None: ...

class PutConfigurationRequest(_message.Message):
    __slots__ = ("configuration",)
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    configuration: S3ApiConfiguration
    def __init__(self, configuration: _Optional[_Union[S3ApiConfiguration, _Mapping]] = ...) -> None: ...

class PutConfigurationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("username", "identity")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    username: str
    identity: Identity
    def __init__(self, username: _Optional[str] = ..., identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("usernames",)
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    usernames: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, usernames: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateAccessKeyRequest(_message.Message):
    __slots__ = ("username", "credential")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    username: str
    credential: Credential
    def __init__(self, username: _Optional[str] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ...) -> None: ...

class CreateAccessKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteAccessKeyRequest(_message.Message):
    __slots__ = ("username", "access_key")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    username: str
    access_key: str
    def __init__(self, username: _Optional[str] = ..., access_key: _Optional[str] = ...) -> None: ...

class DeleteAccessKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUserByAccessKeyRequest(_message.Message):
    __slots__ = ("access_key",)
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    access_key: str
    def __init__(self, access_key: _Optional[str] = ...) -> None: ...

class GetUserByAccessKeyResponse(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class ListAccessKeysRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class ListAccessKeysResponse(_message.Message):
    __slots__ = ("access_keys",)
    ACCESS_KEYS_FIELD_NUMBER: _ClassVar[int]
    access_keys: _containers.RepeatedCompositeFieldContainer[Credential]
    def __init__(self, access_keys: _Optional[_Iterable[_Union[Credential, _Mapping]]] = ...) -> None: ...

class PutUserPolicyRequest(_message.Message):
    __slots__ = ("username", "policy_name", "policy_document")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    username: str
    policy_name: str
    policy_document: str
    def __init__(self, username: _Optional[str] = ..., policy_name: _Optional[str] = ..., policy_document: _Optional[str] = ...) -> None: ...

class PutUserPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUserPolicyRequest(_message.Message):
    __slots__ = ("username", "policy_name")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    policy_name: str
    def __init__(self, username: _Optional[str] = ..., policy_name: _Optional[str] = ...) -> None: ...

class GetUserPolicyResponse(_message.Message):
    __slots__ = ("username", "policy_name", "policy_document")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    username: str
    policy_name: str
    policy_document: str
    def __init__(self, username: _Optional[str] = ..., policy_name: _Optional[str] = ..., policy_document: _Optional[str] = ...) -> None: ...

class DeleteUserPolicyRequest(_message.Message):
    __slots__ = ("username", "policy_name")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    policy_name: str
    def __init__(self, username: _Optional[str] = ..., policy_name: _Optional[str] = ...) -> None: ...

class DeleteUserPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class S3ApiConfiguration(_message.Message):
    __slots__ = ("identities", "accounts", "service_accounts", "policies", "groups")
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    accounts: _containers.RepeatedCompositeFieldContainer[Account]
    service_accounts: _containers.RepeatedCompositeFieldContainer[ServiceAccount]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ..., accounts: _Optional[_Iterable[_Union[Account, _Mapping]]] = ..., service_accounts: _Optional[_Iterable[_Union[ServiceAccount, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("name", "members", "policy_names", "disabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAMES_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    policy_names: _containers.RepeatedScalarFieldContainer[str]
    disabled: bool
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., policy_names: _Optional[_Iterable[str]] = ..., disabled: _Optional[bool] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("name", "credentials", "actions", "account", "disabled", "service_account_ids", "policy_names", "is_static", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_NAMES_FIELD_NUMBER: _ClassVar[int]
    IS_STATIC_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    credentials: _containers.RepeatedCompositeFieldContainer[Credential]
    actions: _containers.RepeatedScalarFieldContainer[str]
    account: Account
    disabled: bool
    service_account_ids: _containers.RepeatedScalarFieldContainer[str]
    policy_names: _containers.RepeatedScalarFieldContainer[str]
    is_static: bool
    tags: _containers.RepeatedCompositeFieldContainer[UserTag]
    def __init__(self, name: _Optional[str] = ..., credentials: _Optional[_Iterable[_Union[Credential, _Mapping]]] = ..., actions: _Optional[_Iterable[str]] = ..., account: _Optional[_Union[Account, _Mapping]] = ..., disabled: _Optional[bool] = ..., service_account_ids: _Optional[_Iterable[str]] = ..., policy_names: _Optional[_Iterable[str]] = ..., is_static: _Optional[bool] = ..., tags: _Optional[_Iterable[_Union[UserTag, _Mapping]]] = ...) -> None: ...

class UserTag(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("access_key", "secret_key", "status")
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    access_key: str
    secret_key: str
    status: str
    def __init__(self, access_key: _Optional[str] = ..., secret_key: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class Account(_message.Message):
    __slots__ = ("id", "display_name", "email_address")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    email_address: str
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., email_address: _Optional[str] = ...) -> None: ...

class ServiceAccount(_message.Message):
    __slots__ = ("id", "parent_user", "description", "credential", "actions", "expiration", "disabled", "created_at", "created_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_USER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    parent_user: str
    description: str
    credential: Credential
    actions: _containers.RepeatedScalarFieldContainer[str]
    expiration: int
    disabled: bool
    created_at: int
    created_by: str
    def __init__(self, id: _Optional[str] = ..., parent_user: _Optional[str] = ..., description: _Optional[str] = ..., credential: _Optional[_Union[Credential, _Mapping]] = ..., actions: _Optional[_Iterable[str]] = ..., expiration: _Optional[int] = ..., disabled: _Optional[bool] = ..., created_at: _Optional[int] = ..., created_by: _Optional[str] = ...) -> None: ...

class PutPolicyRequest(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class PutPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Policy(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class CreateServiceAccountRequest(_message.Message):
    __slots__ = ("service_account",)
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    service_account: ServiceAccount
    def __init__(self, service_account: _Optional[_Union[ServiceAccount, _Mapping]] = ...) -> None: ...

class CreateServiceAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateServiceAccountRequest(_message.Message):
    __slots__ = ("id", "service_account")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    id: str
    service_account: ServiceAccount
    def __init__(self, id: _Optional[str] = ..., service_account: _Optional[_Union[ServiceAccount, _Mapping]] = ...) -> None: ...

class UpdateServiceAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteServiceAccountRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteServiceAccountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServiceAccountRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetServiceAccountResponse(_message.Message):
    __slots__ = ("service_account",)
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    service_account: ServiceAccount
    def __init__(self, service_account: _Optional[_Union[ServiceAccount, _Mapping]] = ...) -> None: ...

class ListServiceAccountsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServiceAccountsResponse(_message.Message):
    __slots__ = ("service_accounts",)
    SERVICE_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    service_accounts: _containers.RepeatedCompositeFieldContainer[ServiceAccount]
    def __init__(self, service_accounts: _Optional[_Iterable[_Union[ServiceAccount, _Mapping]]] = ...) -> None: ...

class GetServiceAccountByAccessKeyRequest(_message.Message):
    __slots__ = ("access_key",)
    ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    access_key: str
    def __init__(self, access_key: _Optional[str] = ...) -> None: ...

class GetServiceAccountByAccessKeyResponse(_message.Message):
    __slots__ = ("service_account",)
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    service_account: ServiceAccount
    def __init__(self, service_account: _Optional[_Union[ServiceAccount, _Mapping]] = ...) -> None: ...

class PutIdentityRequest(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class PutIdentityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveIdentityRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class RemoveIdentityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutGroupRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: Group
    def __init__(self, group: _Optional[_Union[Group, _Mapping]] = ...) -> None: ...

class PutGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveGroupRequest(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...

class RemoveGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
