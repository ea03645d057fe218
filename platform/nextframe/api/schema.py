"""OpenAPI descriptions of NextFrame's authentication schemes (drf-spectacular extensions)."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "nextframe.tenancy.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "nf_live_<id>_<secret><checksum>"}


class DashboardSessionScheme(OpenApiAuthenticationExtension):
    target_class = "nextframe.tenancy.auth.DashboardSessionAuthentication"
    name = "DashboardSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
