"""ModelConfigService, IdentityService and AutoSwitchStoreService: proto in, record call, proto out."""

from __future__ import annotations

from typing import Any

import grpc

from aigw.queue.v1 import queue_pb2, queue_pb2_grpc
from aigw_server.queue import convert
from aigw_server.queue.autoswitch import AutoSwitchRecords
from aigw_server.queue.configs import ModelConfigs
from aigw_server.queue.identity import Identities
from aigw_server.queue.servicer import Readiness
from aigw_server.runtime.errors import InvalidArgument

# grpc's stubs type a context by its request and response messages, which differ per RPC of one servicer.
Ctx = grpc.aio.ServicerContext[Any, Any]


class ModelConfigServicer(queue_pb2_grpc.ModelConfigServiceServicer):
    """Versioned per-model configuration."""

    def __init__(self, configs: ModelConfigs, readiness: Readiness) -> None:
        self.configs = configs
        self.readiness = readiness

    async def GetModelConfig(self, request: queue_pb2.GetModelConfigRequest, context: Ctx) -> queue_pb2.GetModelConfigResponse:
        self.readiness.check()
        return queue_pb2.GetModelConfigResponse(config=convert.settings_proto(self.configs.get(request.model)))

    async def UpdateModelConfig(
        self, request: queue_pb2.UpdateModelConfigRequest, context: Ctx
    ) -> queue_pb2.UpdateModelConfigResponse:
        self.readiness.check()
        patch = convert.patch_from_proto(request.patch)
        updated = await self.configs.update(request.model, request.expected_version, patch, request.updated_by)
        return queue_pb2.UpdateModelConfigResponse(config=convert.settings_proto(updated))

    async def ListModelConfigs(
        self, request: queue_pb2.ListModelConfigsRequest, context: Ctx
    ) -> queue_pb2.ListModelConfigsResponse:
        self.readiness.check()
        configs = [convert.settings_proto(s) for s in self.configs.all()]
        return queue_pb2.ListModelConfigsResponse(configs=configs)

    async def ListModelConfigChanges(
        self, request: queue_pb2.ListModelConfigChangesRequest, context: Ctx
    ) -> queue_pb2.ListModelConfigChangesResponse:
        self.readiness.check()
        changes = await self.configs.changes(request.model, request.page_size)
        return queue_pb2.ListModelConfigChangesResponse(changes=[convert.settings_proto(s) for s in changes])


class IdentityServicer(queue_pb2_grpc.IdentityServiceServicer):
    """Users, API keys and refresh tokens."""

    def __init__(self, identities: Identities, readiness: Readiness) -> None:
        self.identities = identities
        self.readiness = readiness

    async def CreateUser(self, request: queue_pb2.CreateUserRequest, context: Ctx) -> queue_pb2.CreateUserResponse:
        self.readiness.check()
        user = await self.identities.create_user(convert.user_from_proto(request.user))
        return queue_pb2.CreateUserResponse(user=convert.user_proto(user))

    async def GetUser(self, request: queue_pb2.GetUserRequest, context: Ctx) -> queue_pb2.GetUserResponse:
        self.readiness.check()
        return queue_pb2.GetUserResponse(user=convert.user_proto(self.identities.get_user(request.username)))

    async def VerifyPassword(self, request: queue_pb2.VerifyPasswordRequest, context: Ctx) -> queue_pb2.VerifyPasswordResponse:
        self.readiness.check()
        user = await self.identities.verify_password(request.username, request.password)
        return queue_pb2.VerifyPasswordResponse(user=convert.user_proto(user))

    async def ListUsers(self, request: queue_pb2.ListUsersRequest, context: Ctx) -> queue_pb2.ListUsersResponse:
        self.readiness.check()
        return queue_pb2.ListUsersResponse(users=[convert.user_proto(u) for u in self.identities.list_users()])

    async def UpdateUser(self, request: queue_pb2.UpdateUserRequest, context: Ctx) -> queue_pb2.UpdateUserResponse:
        self.readiness.check()
        user = await self.identities.update_user(convert.user_change(request))
        return queue_pb2.UpdateUserResponse(user=convert.user_proto(user))

    async def DeleteUser(self, request: queue_pb2.DeleteUserRequest, context: Ctx) -> queue_pb2.DeleteUserResponse:
        self.readiness.check()
        await self.identities.delete_user(request.username)
        return queue_pb2.DeleteUserResponse()

    async def CreateApiKey(self, request: queue_pb2.CreateApiKeyRequest, context: Ctx) -> queue_pb2.CreateApiKeyResponse:
        self.readiness.check()
        key = await self.identities.create_api_key(convert.key_from_proto(request.key))
        return queue_pb2.CreateApiKeyResponse(key=convert.key_proto(key))

    async def LookupApiKey(self, request: queue_pb2.LookupApiKeyRequest, context: Ctx) -> queue_pb2.LookupApiKeyResponse:
        self.readiness.check()
        key = self.identities.lookup_api_key(request.key_id, request.secret_hash)
        return queue_pb2.LookupApiKeyResponse(key=convert.key_proto(key))

    async def ListApiKeys(self, request: queue_pb2.ListApiKeysRequest, context: Ctx) -> queue_pb2.ListApiKeysResponse:
        self.readiness.check()
        return queue_pb2.ListApiKeysResponse(keys=[convert.key_proto(k) for k in self.identities.list_api_keys(request.subject)])

    async def RevokeApiKey(self, request: queue_pb2.RevokeApiKeyRequest, context: Ctx) -> queue_pb2.RevokeApiKeyResponse:
        self.readiness.check()
        return queue_pb2.RevokeApiKeyResponse(key=convert.key_proto(await self.identities.revoke_api_key(request.key_id)))

    async def StoreRefreshToken(
        self, request: queue_pb2.StoreRefreshTokenRequest, context: Ctx
    ) -> queue_pb2.StoreRefreshTokenResponse:
        self.readiness.check()
        await self.identities.store_refresh_token(convert.token_from_proto(request.token))
        return queue_pb2.StoreRefreshTokenResponse()

    async def ConsumeRefreshToken(
        self, request: queue_pb2.ConsumeRefreshTokenRequest, context: Ctx
    ) -> queue_pb2.ConsumeRefreshTokenResponse:
        self.readiness.check()
        token = await self.identities.consume_refresh_token(request.token_id, request.token_hash)
        return queue_pb2.ConsumeRefreshTokenResponse(token=convert.token_proto(token))

    async def RevokeRefreshTokens(
        self, request: queue_pb2.RevokeRefreshTokensRequest, context: Ctx
    ) -> queue_pb2.RevokeRefreshTokensResponse:
        self.readiness.check()
        revoked = await self.identities.revoke_refresh_tokens(request.family_id, request.subject)
        return queue_pb2.RevokeRefreshTokensResponse(revoked=revoked)


class AutoSwitchStoreServicer(queue_pb2_grpc.AutoSwitchStoreServiceServicer):
    """The auto-switcher's state and decisions."""

    def __init__(self, records: AutoSwitchRecords, readiness: Readiness) -> None:
        self.records = records
        self.readiness = readiness

    async def GetAutoSwitchState(
        self, request: queue_pb2.GetAutoSwitchStateRequest, context: Ctx
    ) -> queue_pb2.GetAutoSwitchStateResponse:
        self.readiness.check()
        return convert.switch_state_proto(self.records.state)

    async def SetAutoSwitchState(
        self, request: queue_pb2.SetAutoSwitchStateRequest, context: Ctx
    ) -> queue_pb2.SetAutoSwitchStateResponse:
        self.readiness.check()
        await self.records.set_state(request.enabled, request.updated_by)
        return queue_pb2.SetAutoSwitchStateResponse()

    async def RecordSwitchDecision(
        self, request: queue_pb2.RecordSwitchDecisionRequest, context: Ctx
    ) -> queue_pb2.RecordSwitchDecisionResponse:
        self.readiness.check()
        if not request.HasField("decision"):
            raise InvalidArgument("decision: required", field="decision")
        stored = await self.records.record(convert.decision_from_proto(request.decision))
        return queue_pb2.RecordSwitchDecisionResponse(decision=convert.decision_proto(stored))

    async def ListSwitchDecisions(
        self, request: queue_pb2.ListSwitchDecisionsRequest, context: Ctx
    ) -> queue_pb2.ListSwitchDecisionsResponse:
        self.readiness.check()
        decisions = await self.records.list(request.page_size)
        return queue_pb2.ListSwitchDecisionsResponse(decisions=[convert.decision_proto(d) for d in decisions])
