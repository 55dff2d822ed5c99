"""Sign-in with Entra ID (config `auth: entra`): the application people, scripts and the tracking server
use, registered in the tenant of whoever runs `pulumi up` and owned by the stack's operators.

- People sign in in the browser (authorization code flow, a web app with a client secret): Entra ID sends
  them back to `https://<public hostname>/callback`, or to the port-forward's `http://localhost:5000/callback`.
- Scripts and the MLflow CLI send an access token for the application's own scope,
  `api://<client id>/user_impersonation`; the Azure CLI is pre-authorized for it, so
  `az account get-access-token --scope <scope>` gives one without a consent prompt.
- Both tokens carry the user's security groups (object ids), which the server checks against
  entraAllowedGroups and entraAdminGroups.

The client secret expires `secret_lifetime_days` after it was made (components/password_expiry.py, as the
deployer's password): later `pulumi up`s keep it, a new lifetime rotates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azuread as azuread
import pulumi_random as random

from components import chart_values
from components.entra_owners import EntraOwners, owners_of_application
from components.password_expiry import PasswordExpiry

# The Azure CLI's well-known client id
# (https://learn.microsoft.com/troubleshoot/entra/entra-id/governance/verify-first-party-apps-sign-in).
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
SCOPE = "user_impersonation"
# The claim Entra ID puts the user's groups in. Above 200 groups a JWT carries an overage marker instead
# of the list (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#groups-overage-claim),
# and such a user cannot sign in: the server reads the groups from the token only.
GROUPS_CLAIM = "groups"
LOGIN_HOST = "https://login.microsoftonline.com"


def issuer(tenant_id: str) -> str:
    """`iss` of the tenant's v2.0 ID and access tokens."""
    return f"{LOGIN_HOST}/{tenant_id}/v2.0"


@dataclass
class SignInArgs:
    name_prefix: str
    """Prefix of the application's display name."""
    secret_lifetime_days: int
    """Days the client secret is valid from its creation (a new value rotates it)."""
    owners: pulumi.Input[Sequence[str]]
    """Object ids of the application's and service principal's owners: the stack's operators
    (components/operators.py), a list that only grows."""
    public_hostname: pulumi.Input[str] | None = None
    """DNS name of the public endpoint (`exposure: public`): its `/callback` is a redirect URI. None:
    private, only the port-forward's."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What must exist before the Entra ID application is created (the data guard)."""


class SignIn(pulumi.ComponentResource):
    application: azuread.Application
    scope_id: random.RandomUuid
    """Id of the `user_impersonation` scope, generated once."""
    identifier_uri: azuread.ApplicationIdentifierUri
    """`api://<client id>`, the prefix of the scope."""
    cli_pre_authorization: azuread.ApplicationPreAuthorized
    """The Azure CLI may ask for the scope without a consent prompt."""
    service_principal: azuread.ServicePrincipal
    owners: list[EntraOwners]
    """Operators added after creation, made owners of the application and service principal."""
    secret_expiry: PasswordExpiry
    """The client secret's end date, fixed when the secret is created."""
    client_secret_credential: azuread.ApplicationPassword
    client_id: pulumi.Output[str]
    client_secret: pulumi.Output[str]
    """The application's client secret (secret): the tracking server redeems sign-in codes with it."""
    tenant_id: pulumi.Output[str]
    issuer: pulumi.Output[str]
    """`https://login.microsoftonline.com/<tenant>/v2.0`."""
    discovery_url: pulumi.Output[str]
    """`<issuer>/.well-known/openid-configuration`."""
    scope: pulumi.Output[str]
    """`api://<client id>/user_impersonation`: what scripts ask Entra ID a token for."""

    def __init__(self, name: str, args: SignInArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:app:SignIn", name, None, opts)

        # As the deployer's: the stack's operators own the application; the tenant is the caller's.
        current = azuread.get_client_config_output()
        self.scope_id = random.RandomUuid(f"{name}-scope-id", opts=pulumi.ResourceOptions(parent=self))
        redirect_uris: list[pulumi.Input[str]] = []
        if args.public_hostname is not None:
            redirect_uris.append(
                pulumi.Output.from_input(args.public_hostname).apply(chart_values.sign_in_callback)
            )
        redirect_uris.append(chart_values.sign_in_callback())  # the port-forward, always
        self.application = azuread.Application(
            f"{name}-app",
            display_name=f"{args.name_prefix}-mlflow",
            owners=args.owners,
            sign_in_audience="AzureADMyOrg",
            web=azuread.ApplicationWebArgs(
                redirect_uris=redirect_uris,
                # Authorization code flow only: no token is ever sent through the browser's URL.
                implicit_grant=azuread.ApplicationWebImplicitGrantArgs(
                    access_token_issuance_enabled=False, id_token_issuance_enabled=False
                ),
            ),
            # Security groups, by object id, in ID and access tokens alike (browser sign-in and scripts).
            group_membership_claims=["SecurityGroup"],
            optional_claims=azuread.ApplicationOptionalClaimsArgs(
                id_tokens=[azuread.ApplicationOptionalClaimsIdTokenArgs(name=GROUPS_CLAIM)],
                access_tokens=[azuread.ApplicationOptionalClaimsAccessTokenArgs(name=GROUPS_CLAIM)],
            ),
            api=azuread.ApplicationApiArgs(
                # v2 access tokens carry the v2 issuer and `aud` = the client id
                # (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#payload-claims);
                # v1 tokens would carry sts.windows.net and `api://<client id>`.
                requested_access_token_version=2,
                oauth2_permission_scopes=[
                    azuread.ApplicationApiOauth2PermissionScopeArgs(
                        id=self.scope_id.result,
                        value=SCOPE,
                        type="User",
                        enabled=True,
                        admin_consent_display_name="Use MLflow",
                        admin_consent_description="Use the MLflow tracking server as the signed-in user.",
                        user_consent_display_name="Use MLflow",
                        user_consent_description="Use the MLflow tracking server as you.",
                    )
                ],
            ),
            # The identifier URI names the client id, known only once the application exists: it is the
            # ApplicationIdentifierUri below, which the provider says to pair with ignoring this input.
            # `owners` is taken at creation only: `owners` below adds later operators, removing nobody.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=args.depends_on, ignore_changes=["identifierUris", "owners"]
            ),
        )
        self.client_id = self.application.client_id
        self.identifier_uri = azuread.ApplicationIdentifierUri(
            f"{name}-identifier-uri",
            application_id=self.application.id,
            identifier_uri=pulumi.Output.concat("api://", self.client_id),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Pre-authorized clients get the scope without a consent prompt
        # (https://learn.microsoft.com/graph/api/resources/preauthorizedapplication).
        self.cli_pre_authorization = azuread.ApplicationPreAuthorized(
            f"{name}-azure-cli",
            application_id=self.application.id,
            authorized_client_id=AZURE_CLI_CLIENT_ID,
            permission_ids=[self.scope_id.result],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service_principal = azuread.ServicePrincipal(
            f"{name}-sp",
            client_id=self.client_id,
            owners=args.owners,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["owners"]),
        )
        self.owners = owners_of_application(
            name, self.application.object_id, self.service_principal.object_id, args.owners, self
        )
        # A date computed once (components/password_expiry.py): the same lifetime on the next `pulumi up`
        # is no change, so the secret is not rotated on every run.
        self.secret_expiry = PasswordExpiry(
            f"{name}-secret-expiry",
            lifetime_days=args.secret_lifetime_days,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.application]),
        )
        self.client_secret_credential = azuread.ApplicationPassword(
            f"{name}-secret",
            application_id=self.application.id,
            display_name="mlflow-tracking",
            end_date=self.secret_expiry.end_date,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.secret_expiry]),
        )

        self.client_secret = pulumi.Output.secret(self.client_secret_credential.value)
        self.tenant_id = current.tenant_id
        self.issuer = self.tenant_id.apply(issuer)
        self.discovery_url = self.issuer.apply(lambda url: f"{url}/.well-known/openid-configuration")
        self.scope = self.identifier_uri.identifier_uri.apply(lambda uri: f"{uri}/{SCOPE}")

        self.register_outputs(
            {
                "clientId": self.client_id,
                "clientSecret": self.client_secret,
                "tenantId": self.tenant_id,
                "issuer": self.issuer,
                "discoveryUrl": self.discovery_url,
                "scope": self.scope,
            }
        )
