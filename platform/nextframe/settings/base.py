"""NextFrame settings, read from the environment in one place (see nextframe.config).

Embedded defaults need no server: SQLite, the in-memory channel layer, a filesystem Celery broker
and a local media folder, all under NEXTFRAME_DATA_DIR. Scaled out: DATABASE_URL (PostgreSQL) and
REDIS_URL (channel layer, Celery broker, pool leases).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from nextframe.config import data_dir, env_bool, env_float, env_int, env_list, env_str, secret_key
from nextframe.logs import logging_config

ENVIRONMENT = env_str("NEXTFRAME_ENV", "development")
if ENVIRONMENT not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"NEXTFRAME_ENV={ENVIRONMENT!r}: use development, production or test")
PRODUCTION = ENVIRONMENT == "production"
DEBUG = env_bool("DEBUG", default=False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when NEXTFRAME_ENV=production.")

DATA_DIR = data_dir()
SECRET_KEY = secret_key(PRODUCTION)
ALLOWED_HOSTS = env_list("NEXTFRAME_ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("NEXTFRAME_ALLOWED_HOSTS must name the public host(s) in production.")
CSRF_TRUSTED_ORIGINS = env_list("NEXTFRAME_CSRF_TRUSTED_ORIGINS", [])
# Browser origins allowed on /v1/live besides ALLOWED_HOSTS (customers' own sites; nextframe/origins.py).
WS_ALLOWED_ORIGINS = env_list("NEXTFRAME_WS_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "nextframe.tenancy",
    "nextframe.api",
    "nextframe.live",
    "nextframe.clips",
    "nextframe.audits",
    # The top-level packages' Django apps (each a home of its own, beside its pure core).
    "moderation",
    "billing",
    "frontend",
]

MIDDLEWARE = [
    "nextframe.api.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "nextframe.urls"
ASGI_APPLICATION = "nextframe.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],  # the pages are the frontend app's (frontend/templates/)
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context.navigation",  # every page's header: organisations, role, sections
            ]
        },
    }
]

# --- Database: SQLite under the data dir, or PostgreSQL via DATABASE_URL -----------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "nextframe.sqlite3"),
            # WAL lets the Celery worker and the web process work side by side. IMMEDIATE makes every
            # transaction take the write lock when it begins (waiting up to `timeout`): a deferred
            # one that reads, then writes, fails at once with "database is locked" when another
            # process wrote in between, whatever the timeout.
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, pool leases ------------------------------------------
# Every Redis client has explicit timeouts (docs/operations.md, "Redis timeouts"): redis-py 8
# reads for at most 5 s by default, exactly as long as the channel layer's blocking pop waits, so
# every empty pop timed out, the receive raised, and the WebSocket it served died with 1011.
REDIS_URL = env_str("REDIS_URL")
REDIS_CONNECT_TIMEOUT_S = 5.0
if REDIS_URL:
    from channels_redis.core import RedisChannelLayer

    # A read may legitimately block for the whole pop (BZPOPMIN); past that plus a margin, Redis or
    # the network is stuck and the layer reconnects. Derived, so a new channels_redis default follows.
    CHANNEL_LAYER_SOCKET_TIMEOUT_S = RedisChannelLayer.brpop_timeout + 10.0
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's layer, whose receive survives a Redis restart (nextframe.channel_layer).
            "BACKEND": "nextframe.channel_layer.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [{
                "address": REDIS_URL,
                "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT_S,
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
                "socket_keepalive": True,
                # PING a connection idle this long before reusing it (a dead one reconnects).
                "health_check_interval": 30,
            }]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = REDIS_URL or "filesystem://"
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        # kombu passes socket_timeout=None (wait forever) unless told: a publish from a web
        # process on a half-open connection would hang. Its BRPOP blocks 1 s (kombu's
        # brpop_timeout), well inside this; its own health check catches a silent consumer socket.
        "socket_timeout": 10.0,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": 25,
    }
    if REDIS_URL
    else {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # Exchange bindings (fanout, pidbox): kombu's default is ./control relative to the cwd.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
)
# No result backend (task_ignore_result, nextframe.celery): Celery makes no other Redis client.

# --- Stale live-session records (nextframe.live.sweeper) ------------------------------------------
# Every server process ends records not checkpointed for LIVE_STALE_RECORD_S (their process died),
# looking every LIVE_SWEEP_INTERVAL_S (0 turns the timer off).
LIVE_STALE_RECORD_S = env_float("NEXTFRAME_LIVE_STALE_RECORD_S", 60.0, minimum=2.0)
LIVE_SWEEP_INTERVAL_S = env_float("NEXTFRAME_LIVE_SWEEP_INTERVAL_S", 30.0, minimum=0.0)
# A running session whose ticks (usage checkpoint, limits) keep failing, the database unreachable
# say, ends with server_error after this long (30 s, at most half the stale age): below
# LIVE_STALE_RECORD_S, so the stale sweep never takes a running session's record for a dead one
# (docs/operations.md, "Fault tests").
LIVE_TICK_FAILURE_GRACE_S = env_float("NEXTFRAME_LIVE_TICK_FAILURE_GRACE_S", min(30.0, LIVE_STALE_RECORD_S / 2),
                                      minimum=0.0)
if LIVE_TICK_FAILURE_GRACE_S >= LIVE_STALE_RECORD_S:
    raise ImproperlyConfigured(
        f"NEXTFRAME_LIVE_TICK_FAILURE_GRACE_S ({LIVE_TICK_FAILURE_GRACE_S:g}) must be below "
        f"NEXTFRAME_LIVE_STALE_RECORD_S ({LIVE_STALE_RECORD_S:g})")

# --- Media and static ---------------------------------------------------------------------------
MEDIA_ROOT = str(DATA_DIR / "media")
MEDIA_URL = "/media-not-public/"  # files are served only through authenticated endpoints
STATIC_URL = "/static/"
STATIC_ROOT = str(DATA_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# WhiteNoise serves /static/ from the apps' static folders (found at start-up, no collectstatic
# step on a fresh install) and from STATIC_ROOT if an operator ran collectstatic into it.
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "whitenoise.middleware.WhiteNoiseMiddleware")
# Outermost: every response gets its X-Request-ID, and everything logged inside carries it.
MIDDLEWARE.insert(0, "nextframe.logs.RequestIdMiddleware")
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
Path(STATIC_ROOT).mkdir(exist_ok=True)  # WhiteNoise warns about a missing one on every start

# --- Web server (nextframe.web): connection and body limits enforced by daphne --------------------
# Seconds a connection has to send its request headers (from accept, or from the end of the
# previous response on a keep-alive connection); 0 turns the deadline off.
HTTP_HEADER_TIMEOUT_S = env_float("NEXTFRAME_HTTP_HEADER_TIMEOUT_S", 10.0, minimum=0.0)
# Seconds an HTTP connection may send nothing while its request (body) arrives; 0: Twisted's 12 h.
HTTP_IDLE_TIMEOUT_S = env_float("NEXTFRAME_HTTP_IDLE_TIMEOUT_S", 30.0, minimum=0.0)
# Open connections per client address (the TCP peer: behind a proxy, the proxy); 0: no cap.
HTTP_MAX_CONNECTIONS_PER_CLIENT = env_int("NEXTFRAME_HTTP_MAX_CONNECTIONS_PER_CLIENT", 100, minimum=0)
# Open connections in total; 0: the file-descriptor limit less 256 kept for the database and files.
HTTP_MAX_CONNECTIONS = env_int("NEXTFRAME_HTTP_MAX_CONNECTIONS", 0, minimum=0)

# --- Auth ---------------------------------------------------------------------------------------
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- REST API -----------------------------------------------------------------------------------
# Largest JSON body accepted under /v1/ (uploads have their own limit); larger -> 413 envelope.
MAX_JSON_BODY_BYTES = env_int("NEXTFRAME_MAX_JSON_BODY_BYTES", 64 * 1024, minimum=1024)
MAX_UPLOAD_BYTES = env_int("NEXTFRAME_MAX_UPLOAD_BYTES", 64 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_JSON_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
TICKET_TTL_S = 60
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["nextframe.tenancy.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["nextframe.tenancy.auth.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "nextframe.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "NextFrame API",
    "DESCRIPTION": "REST surface of NextFrame. The live WebSocket protocol v1 is documented in docs/protocol.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
}

# --- Brute-force throttles (docs/protocol.md section 9, README "Configuration") -----------------
# Counters live in the default cache: Redis when REDIS_URL is set (every node shares the counts),
# else this process's memory (the embedded profile runs one web process).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "nextframe"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "nextframe"}}
# Failed API-key/ticket authentications (REST and WebSocket) per client address and window.
NEXTFRAME_AUTH_FAILURE_LIMIT = env_int("NEXTFRAME_AUTH_FAILURE_LIMIT", 20, minimum=0)
NEXTFRAME_AUTH_FAILURE_WINDOW_S = env_int("NEXTFRAME_AUTH_FAILURE_WINDOW_S", 300, minimum=1)
NEXTFRAME_TICKETS_PER_MINUTE = env_int("NEXTFRAME_TICKETS_PER_MINUTE", 60, minimum=0)
# Dashboard and admin login forms: django-axes (attempts stored in the database, so shared by nodes).
INSTALLED_APPS += ["axes"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware", "nextframe.api.middleware.UnknownQueryParamsMiddleware"]
AUTHENTICATION_BACKENDS = ["nextframe.tenancy.backends.LoginLockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("NEXTFRAME_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_float("NEXTFRAME_LOGIN_COOLOFF_S", 900.0, minimum=1.0) / 3600.0  # hours
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "frontend.dashboard.login_locked_out"
AXES_VERBOSE = False
# The OpenAPI document: error responses, bounds and list envelopes on every operation.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "nextframe.api.schema.AutoSchema"
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = ["drf_spectacular.hooks.postprocess_schema_enums",
                                                "nextframe.api.schema.postprocess"]

# --- Inference ----------------------------------------------------------------------------------
CPU_CAPACITY = env_float("NEXTFRAME_CPU_CAPACITY", 1.0, minimum=0.0)
MODEL_DIR = env_str("NEXTFRAME_MODEL_DIR", str(DATA_DIR / "models"))
# inference/ never reads Django settings: the engines that load local weights (sd-stream, causal-video)
# find their folders through the environment, which the device workers inherit.
if MODEL_DIR:
    os.environ.setdefault("NEXTFRAME_MODEL_DIR", MODEL_DIR)

# --- Security in production ---------------------------------------------------------------------
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False

# console: plain lines (the default); json: one JSON object per line with request and session ids
# (structlog, nextframe.logs).
LOG_FORMAT = (env_str("NEXTFRAME_LOG_FORMAT", "console") or "console").lower()
LOGGING = logging_config(LOG_FORMAT, env_str("NEXTFRAME_LOG_LEVEL", "INFO") or "INFO")

# --- GPU pool -----------------------------------------------------------------------------------
POOL_LEASE_TTL_S = env_float("NEXTFRAME_POOL_LEASE_TTL_S", 15.0, minimum=1.0)
# --- Nodes (scaled out: docs/operations.md, "Nodes and redirects") ---------------------------------
# This node's id in the pool (unique among the nodes sharing one Redis; no '/'): default the host name.
NODE_ID = (env_str("NEXTFRAME_NODE_ID") or socket.gethostname() or "local").replace("/", "_")
# The public WebSocket URL of this node's live endpoint, e.g. wss://live.example.com/nodes/{node}/v1/live
# ({node} becomes NODE_ID): a session placed on this node's devices from another node is redirected
# here. Unset: the node takes only the sessions that reach it (no redirects to it).
PUBLIC_URL = (env_str("NEXTFRAME_PUBLIC_URL") or "").replace("{node}", NODE_ID)
if PUBLIC_URL and not PUBLIC_URL.startswith(("ws://", "wss://")):
    raise ImproperlyConfigured(f"NEXTFRAME_PUBLIC_URL={PUBLIC_URL!r} must be a ws:// or wss:// URL of /v1/live")
# Simulated devices (inference.pool.FileProbe) instead of NVML / the CPU device: tests, local clusters.
DEVICES_FILE = env_str("NEXTFRAME_DEVICES_FILE")
# The pool's Redis keys (a {hashtag} keeps them in one Redis Cluster slot); tests isolate clusters by it.
POOL_KEY_PREFIX = env_str("NEXTFRAME_POOL_KEY_PREFIX", "nextframe:{pool}")

# --- Live sessions ------------------------------------------------------------------------------
LIVE_IDLE_TIMEOUT_S = env_float("NEXTFRAME_LIVE_IDLE_TIMEOUT_S", 30.0, minimum=1.0)
LIVE_MAX_DURATION_S = env_float("NEXTFRAME_LIVE_MAX_DURATION_S", 3600.0, minimum=1.0)
LIVE_METRICS_INTERVAL_S = env_float("NEXTFRAME_LIVE_METRICS_INTERVAL_S", 1.0, minimum=0.05)
LIVE_TEXT_RATE_PER_S = env_int("NEXTFRAME_LIVE_TEXT_RATE_PER_S", 50, minimum=1)
# A session whose socket has not drained what the server sent for this long ends with slow_reader.
LIVE_SLOW_READER_TIMEOUT_S = env_float("NEXTFRAME_LIVE_SLOW_READER_TIMEOUT_S", 10.0, minimum=1.0)
# SIGTERM: the longest a server drains (live sessions ended with `shutdown`, sockets closed) before
# it cancels what is left and exits (nextframe.live.drain). Keep it under the orchestrator's kill
# timeout (Kubernetes: terminationGracePeriodSeconds, less the preStop sleep).
SHUTDOWN_GRACE_S = env_float("NEXTFRAME_SHUTDOWN_GRACE_S", 20.0, minimum=0.0)

# --- Operations ---------------------------------------------------------------------------------
# GET /metrics (Prometheus): with a token, `Authorization: Bearer <token>` is required; without one
# only direct loopback requests are answered (nextframe.metrics).
METRICS_TOKEN = env_str("NEXTFRAME_METRICS_TOKEN")

# --- Clip tier ----------------------------------------------------------------------------------
# Typed here with their defaults, and read as settings.CLIP_* (nextframe.clips): no second default.
CLIP_BATCH_FRAMES = env_int("NEXTFRAME_CLIP_BATCH_FRAMES", 8, minimum=1)
CLIP_STALE_AFTER_S = env_float("NEXTFRAME_CLIP_STALE_AFTER_S", 30.0, minimum=1.0)
CLIP_SWEEP_INTERVAL_S = env_float("NEXTFRAME_CLIP_SWEEP_INTERVAL_S", 30.0, minimum=0.0)
CLIP_MAX_ATTEMPTS = env_int("NEXTFRAME_CLIP_MAX_ATTEMPTS", 3, minimum=1)
CLIP_RETRY_DELAY_S = env_float("NEXTFRAME_CLIP_RETRY_DELAY_S", 5.0, minimum=0.0)
CLIP_PREEMPTED_RETRY_S = env_float("NEXTFRAME_CLIP_PREEMPTED_RETRY_S", 5.0, minimum=0.0)
CLIP_MIN_SHARE = env_float("NEXTFRAME_CLIP_MIN_SHARE", 0.05, minimum=0.001)
CLIP_VIDEO_URL_TTL_S = env_int("NEXTFRAME_CLIP_VIDEO_URL_TTL_S", 3600, minimum=10)
# Where clip attempts encode before the file is stored (swept of dead attempts' folders).
CLIP_WORK_DIR = env_str("NEXTFRAME_CLIP_WORK_DIR", str(DATA_DIR / "work" / "clips"))

# --- Tier audits --------------------------------------------------------------------------------
# Typed here with their defaults, and read as settings.NEXTFRAME_AUDIT_* (nextframe.audits.plan,
# .evidence, .queueing, .worker, .server): no second default.
NEXTFRAME_AUDIT_ON_STARTUP = env_bool("NEXTFRAME_AUDIT_ON_STARTUP", True)
NEXTFRAME_AUDIT_STALE_AFTER_S = env_float("NEXTFRAME_AUDIT_STALE_AFTER_S", 86400.0, minimum=1.0)
NEXTFRAME_AUDIT_STARTUP_DELAY_S = env_float("NEXTFRAME_AUDIT_STARTUP_DELAY_S", 10.0, minimum=0.0)
NEXTFRAME_AUDIT_IDLE_WAIT_S = env_float("NEXTFRAME_AUDIT_IDLE_WAIT_S", 300.0, minimum=0.0)
NEXTFRAME_AUDIT_SESSIONS = env_int("NEXTFRAME_AUDIT_SESSIONS", 3, minimum=1)
NEXTFRAME_AUDIT_SIZE = env_str("NEXTFRAME_AUDIT_SIZE", "128x128")
NEXTFRAME_AUDIT_PER_ORG_PER_HOUR = env_int("NEXTFRAME_AUDIT_PER_ORG_PER_HOUR", 6, minimum=0)
# Modules imported at start-up that register extra engines (tests, private engines).
NEXTFRAME_EXTRA_ENGINES = env_list("NEXTFRAME_EXTRA_ENGINES", [])

# Moderation (moderation/, docs/moderation.md). The live host's frame/input checks and the session
# service's prompt check, as dotted paths (empty: none); the platform's default policy and the floor
# that organisations cannot go below; how long opted-in thumbnails of flagged frames are kept.
LIVE_MODERATION = env_str("NEXTFRAME_LIVE_MODERATION", "moderation.live.host_checks")
LIVE_PROMPT_CHECK = env_str("NEXTFRAME_LIVE_PROMPT_CHECK", "moderation.live.prompt_check")
MODERATION_DEFAULT_POLICY: dict = {}
MODERATION_FLOOR: dict = {}
MODERATION_PROMPT_CLASSIFIER = True
# The share of one core the sampled frame classifier may take (moderation.classifier.ClassifierWorker).
MODERATION_CLASSIFIER_DUTY = env_float("NEXTFRAME_MODERATION_CLASSIFIER_DUTY", 0.25, minimum=0.01)
# Every frame is compared with the organisation's whole hash list: the list is bounded.
MODERATION_MAX_HASHES_PER_ORG = env_int("NEXTFRAME_MODERATION_MAX_HASHES_PER_ORG", 10_000, minimum=1)
MODERATION_THUMBNAIL_RETENTION_DAYS = env_int("NEXTFRAME_MODERATION_THUMBNAIL_RETENTION_DAYS", 30, minimum=1)
# --- billing (docs/billing.md) ---
# A live session writes a ledger segment at least this often (and at its end): a crash loses at most one.
BILLING_SEGMENT_S = env_float("NEXTFRAME_BILLING_SEGMENT_S", 10.0, minimum=0.0)
# A clip's up-front quota estimate: reserved share x clip duration x this factor (GPU-seconds).
BILLING_CLIP_ESTIMATE_FACTOR = env_float("NEXTFRAME_BILLING_CLIP_ESTIMATE_FACTOR", 1.0, minimum=0.0)
# Stripe is a sync target: without a secret key the ledger works and sync is off.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "")  # another base address (tests, proxies); default Stripe's
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
STRIPE_WEBHOOK_TOLERANCE_S = env_int("NEXTFRAME_STRIPE_WEBHOOK_TOLERANCE_S", 300, minimum=1)
NEXTFRAME_STRIPE_METER_EVENT = env_str("NEXTFRAME_STRIPE_METER_EVENT", "nextframe_gpu_seconds")
# The outbox drain (a Celery beat task on the maintenance queue): how often, how many per run.
BILLING_SYNC_INTERVAL_S = env_float("NEXTFRAME_BILLING_SYNC_INTERVAL_S", 15.0, minimum=1.0)
BILLING_SYNC_BATCH = env_int("NEXTFRAME_BILLING_SYNC_BATCH", 200, minimum=1)
BILLING_SYNC_MAX_BACKOFF_S = env_float("NEXTFRAME_BILLING_SYNC_MAX_BACKOFF_S", 3600.0, minimum=1.0)
# The beat schedule (`nextframe up` runs beat inside its embedded worker; scaled out: one beat process).
CELERY_BEAT_SCHEDULE = {
    "billing-sync-meter-events": {
        "task": "billing.sync_meter_events",
        "schedule": BILLING_SYNC_INTERVAL_S,
        "options": {"queue": "maintenance", "expires": BILLING_SYNC_INTERVAL_S},
    },
    # Opted-in thumbnails of flagged frames are kept MODERATION_THUMBNAIL_RETENTION_DAYS (docs/moderation.md).
    "moderation-purge-thumbnails": {
        "task": "moderation.purge_thumbnails",
        "schedule": 3600.0,
        "options": {"queue": "maintenance", "expires": 3600.0},
    },
}

# --- Dashboard (frontend/, docs/dashboard.md) ---------------------------------------------------
# One-time sign-in links printed by `nextframe up` (first run) and `nextframe createuser`.
SIGNIN_LINK_TTL_S = env_int("NEXTFRAME_SIGNIN_LINK_TTL_S", 900, minimum=10)
# Self-service sign-up (a new user creates their own organisation): off unless enabled.
SIGNUP_ENABLED = env_bool("NEXTFRAME_SIGNUP_ENABLED", False)
# The REST API also accepts the dashboard's session (with its CSRF token), acting for the user's
# current organisation with the scopes of their role (nextframe.tenancy.auth); API keys come first.
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = ["nextframe.tenancy.auth.ApiKeyAuthentication",
                                                    "nextframe.tenancy.auth.DashboardSessionAuthentication"]
