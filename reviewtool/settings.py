"""Settings for the review tool.

Everything comes from the environment, with embedded defaults that need no
configuration at all: SQLite in WAL mode and django-q2's ORM broker. Setting
``DATABASE_URL`` and ``REDIS_URL`` scales the same code out to PostgreSQL and
Redis; ``DJANGO_DEBUG=0`` switches to production behaviour, which refuses to
start without ``DJANGO_SECRET_KEY``.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    return _env_parsed(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_parsed(name, default, float, "a number")


def _env_parsed(name: str, default, parse, what: str):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {what}, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# Local state that must never be committed: the SQLite database, the
# development secret key and the generated admin password.
VAR_DIR = Path(env_str("REVIEWTOOL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DJANGO_DEBUG", True)


def _secret_key() -> str:
    key = os.environ.get("DJANGO_SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Production (DJANGO_DEBUG=0) refuses to start "
            "without a secret key from the environment."
        )
    # Development only: a random key kept in the git-ignored var/ folder, so
    # sessions survive restarts without a committed secret.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "import_export",
    "images",
    "predictions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "reviewtool.urls"
WSGI_APPLICATION = "reviewtool.wsgi.application"
ASGI_APPLICATION = "reviewtool.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
# SQLite is tuned for a web process, a cluster and several reviewers writing at
# once: WAL lets readers run beside the writer, IMMEDIATE transactions take the
# write lock up front (no deadlock on lock upgrade), and the busy timeout makes
# writers wait instead of failing with "database is locked".
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
}

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "db.sqlite3")),
            "OPTIONS": SQLITE_OPTIONS,
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", SQLITE_OPTIONS)
    DATABASES["default"]["TEST"] = {"NAME": env_str("SQLITE_TEST_PATH", "") or None}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
# Media is never served publicly: images.views.media_file checks permissions
# and streams the file (or hands it to the front server via X-Accel-Redirect,
# or, on an object store, redirects to a short-lived presigned URL).
MEDIA_URL = "/media/"
WEIGHTS_DIR = Path(env_str("WEIGHTS_DIR", str(BASE_DIR / "weights")))

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    },
    "weights": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(WEIGHTS_DIR), "base_url": None},
    },
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        ),
    },
}
# Header used to hand a permitted file to the front server ("X-Accel-Redirect"
# for nginx, "X-Sendfile" for Apache); empty means Django streams the file.
MEDIA_SENDFILE_HEADER = env_str("MEDIA_SENDFILE_HEADER", "")
MEDIA_SENDFILE_PREFIX = env_str("MEDIA_SENDFILE_PREFIX", "/protected-media/")

# --- Object storage (several machines) ----------------------------------------
# MEDIA_STORAGE=s3 puts media, thumbnails, exports and checkpoints in one
# bucket of any S3-compatible store (reviewtool.object_storage): private
# objects under media/ and weights/. The media view checks permissions, then
# redirects to a presigned URL valid for S3_URL_SECONDS (S3_MEDIA_REDIRECT=0
# streams through Django instead, for a store the browsers cannot reach).
# Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, else boto3's own
# chain (instance role, ~/.aws).
MEDIA_STORAGE = env_str("MEDIA_STORAGE", "filesystem").strip().lower()
S3_URL_SECONDS = env_int("S3_URL_SECONDS", 60)
S3_MEDIA_REDIRECT = env_bool("S3_MEDIA_REDIRECT", True)
# Workers copy checkpoints from the store here once per machine, named by content hash.
CHECKPOINT_CACHE_DIR = Path(env_str("CHECKPOINT_CACHE_DIR", str(VAR_DIR / "checkpoint-cache")))
CHECKPOINT_CACHE_KEEP = env_int("CHECKPOINT_CACHE_KEEP", 5)  # the copies used last; older ones are removed
if MEDIA_STORAGE == "s3":
    if not os.environ.get("S3_BUCKET"):
        raise ImproperlyConfigured("MEDIA_STORAGE=s3 needs S3_BUCKET, the bucket that holds media and checkpoints.")
    _S3_ACL = os.environ.get("S3_DEFAULT_ACL", "").strip() or "bucket-owner-full-control"
    _S3_OPTIONS = {
        "bucket_name": os.environ["S3_BUCKET"],
        "endpoint_url": os.environ.get("S3_ENDPOINT_URL") or None,
        "region_name": os.environ.get("S3_REGION") or None,
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
        # "path" for a store without bucket subdomains; empty lets boto3 choose.
        "addressing_style": os.environ.get("S3_ADDRESSING_STYLE") or None,
        # Only the bucket owner reads an object (reviewtool.object_storage says why this
        # canned ACL); "none" sends none, for a store that refuses ACL headers.
        "default_acl": None if _S3_ACL.lower() == "none" else _S3_ACL,
        "querystring_expire": S3_URL_SECONDS,
    }
    STORAGES["default"] = {
        "BACKEND": "reviewtool.object_storage.PrivateS3Storage",
        "OPTIONS": {**_S3_OPTIONS, "location": "media"},
    }
    STORAGES["weights"] = {
        "BACKEND": "reviewtool.object_storage.PrivateS3Storage",
        "OPTIONS": {**_S3_OPTIONS, "location": "weights"},
    }
elif MEDIA_STORAGE != "filesystem":
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be 'filesystem' or 's3', got {MEDIA_STORAGE!r}")

# --- Upload limits ----------------------------------------------------------
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 50 * 1024 * 1024)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 50_000_000)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 1000)
UPLOAD_MAX_TOTAL_BYTES = env_int("UPLOAD_MAX_TOTAL_BYTES", 2 * 1024 * 1024 * 1024)
ZIP_MAX_MEMBERS = env_int("ZIP_MAX_MEMBERS", 10_000)
ZIP_MAX_TOTAL_BYTES = env_int("ZIP_MAX_TOTAL_BYTES", 4 * 1024 * 1024 * 1024)
ZIP_MAX_RATIO = env_int("ZIP_MAX_RATIO", 100)
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 320)

# Django's own request limits follow ours, so a too-large upload is refused by
# the form with a message instead of a bare 400 from the request parser.
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Inference --------------------------------------------------------------
INFERENCE_DEVICE = env_str("INFERENCE_DEVICE", "auto")  # auto | cpu | cuda | cuda:N
INFERENCE_PRECISION = env_str("INFERENCE_PRECISION", "auto")  # auto | fp32 | bf16 | fp16
INFERENCE_BATCH_SIZE = env_int("INFERENCE_BATCH_SIZE", 32)
INFERENCE_THREADS = env_int("INFERENCE_THREADS", 0)  # 0: torch's default
# Store each prediction's embedding (ml.features: "more like this", label similar).
# Off only to measure what it costs (bench/pipeline.py runs both in one run).
STORE_EMBEDDINGS = env_bool("STORE_EMBEDDINGS", True)
# Images per task, at most. Each task restarts the decode/inference overlap and
# commits once: chunks of 50 ran 6% slower than of 100 (bench/pipeline.py's
# photos), while predictions still appear every second or two on a CPU.
PREDICTION_CHUNK_SIZE = env_int("PREDICTION_CHUNK_SIZE", 128)
# A prediction job that has made no progress for this long, while nothing waits
# in the broker's queue, has lost chunks (a crashed worker or cluster; Redis
# drops the tasks a cluster held): the periodic sweep queues its images again.
PREDICTION_SWEEP_AFTER_SECONDS = env_int("PREDICTION_SWEEP_AFTER_SECONDS", 900)
API_MAX_FILES = env_int("API_MAX_FILES", 64)
# The JSON endpoint's limits per request, both checked before the work they
# bound: the body from its Content-Length before a byte is read (a body sent
# without one is read only up to the limit), and the pixels from the image
# headers before any decode. 64 images of 49 MP took 24.5 s and 1.6 GB; 400 MP
# bounds a request to about an eighth of that and still takes 8 images at the
# per-image limit, or 64 of 6 MP.
API_MAX_REQUEST_BYTES = env_int("API_MAX_REQUEST_BYTES", 256 * 1024 * 1024)
API_MAX_PIXELS_PER_REQUEST = env_int("API_MAX_PIXELS_PER_REQUEST", 400_000_000)
REVIEW_CLAIM_SECONDS = env_int("REVIEW_CLAIM_SECONDS", 300)
# Open claims one reviewer may hold; claiming more releases their oldest, so a
# client calling "next" in a loop cannot take the whole queue from the others.
REVIEW_MAX_OPEN_CLAIMS = env_int("REVIEW_MAX_OPEN_CLAIMS", 10)
# Reviewer quality (predictions/selectors/quality.py). The share of each reviewer's
# screen items that are gold images, served without telling and never twice to one
# reviewer; a decision on one measures the reviewer and never changes the label.
REVIEW_GOLD_RATE = env_float("REVIEW_GOLD_RATE", 0.05)
# The share of images (chosen by a hash of the id, so stable) that get REVIEW_OVERLAP_K
# independent reviews; the label is their majority, a tie goes to a Lead's adjudication.
REVIEW_OVERLAP_SHARE = env_float("REVIEW_OVERLAP_SHARE", 0.0)
REVIEW_OVERLAP_K = env_int("REVIEW_OVERLAP_K", 2)
# Hide the model's suggestion on overlap images (no anchoring on it while agreement is measured).
REVIEW_BLIND = env_bool("REVIEW_BLIND", False)
for _name, _value in (("REVIEW_GOLD_RATE", REVIEW_GOLD_RATE), ("REVIEW_OVERLAP_SHARE", REVIEW_OVERLAP_SHARE)):
    if not 0.0 <= _value <= 1.0:
        raise ImproperlyConfigured(f"{_name} must be a share between 0 and 1, got {_value}")
if REVIEW_OVERLAP_K < 2:
    raise ImproperlyConfigured(f"REVIEW_OVERLAP_K must be at least 2 (independent reviews per image), got {REVIEW_OVERLAP_K}")
EXPORT_SYNC_MAX_ROWS = env_int("EXPORT_SYNC_MAX_ROWS", 5000)
# Label imports above this many rows are checked and applied in the cluster (a LabelImportJob).
LABEL_IMPORT_SYNC_MAX_ROWS = env_int("LABEL_IMPORT_SYNC_MAX_ROWS", 2000)
# An auto-accept run over more images than this runs in the task queue, with progress.
AUTO_ACCEPT_SYNC_MAX = env_int("AUTO_ACCEPT_SYNC_MAX", 2000)
# A label audit (predictions/services/label_audit.py) is queued after every this many
# new reviews; 0 turns the automatic audit off (it still runs on demand).
LABEL_AUDIT_EVERY_REVIEWS = env_int("LABEL_AUDIT_EVERY_REVIEWS", 500)
if LABEL_AUDIT_EVERY_REVIEWS < 0:
    raise ImproperlyConfigured(f"LABEL_AUDIT_EVERY_REVIEWS must be 0 (off) or a number of reviews, got {LABEL_AUDIT_EVERY_REVIEWS}")

# --- django-q2 --------------------------------------------------------------
Q_WORKERS = env_int("Q_WORKERS", 1)
Q_TIMEOUT = env_int("Q_TIMEOUT", 1800)
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "reviewtool"),
    "workers": Q_WORKERS,
    # A task must finish (or be killed) before the broker redelivers it.
    "timeout": Q_TIMEOUT,
    "retry": env_int("Q_RETRY", Q_TIMEOUT + 300),
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 3),
    "ack_failures": True,
    # The model is cached per worker process; recycling rarely keeps it warm.
    "recycle": env_int("Q_RECYCLE", 1000),
    "save_limit": env_int("Q_SAVE_LIMIT", 1000),
    # With the ORM broker a task's retry clock starts when the cluster takes it
    # off the queue, not when a worker starts it: a deep local queue on a slow
    # CPU worker could see waiting chunks redelivered elsewhere, and it hoards
    # work that other clusters could run.
    "queue_limit": env_int("Q_QUEUE_LIMIT", 2 * Q_WORKERS),
    # How long the ORM broker's pusher sleeps on an empty queue: the delay before
    # an upload's first chunk starts (django-q2's default; Redis blocks instead).
    "poll": env_float("Q_POLL", 0.2),
    "catch_up": False,
    "label": "Task queue",
}
if os.environ.get("REDIS_URL"):
    Q_CLUSTER["redis"] = os.environ["REDIS_URL"]
else:
    Q_CLUSTER["orm"] = "default"

# django-q2 keeps each cluster's status in a cache. A cache shared by every
# process (Redis, else a database table made by a migration) lets the admin's
# cluster page and `qmonitor` see every cluster, not only those in their own
# process. The default cache stays per process: the review queue keeps cheap
# hints there, and a database cache would turn its reads into queries.
Q_CLUSTER["cache"] = "django_q"
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "django_q": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["REDIS_URL"]}
        if os.environ.get("REDIS_URL")
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "django_q_cache"}
    ),
}
if env_bool("Q_SYNC", False):
    Q_CLUSTER["sync"] = True

# --- django-import-export ---------------------------------------------------
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "import"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "export"
IMPORT_EXPORT_SKIP_ADMIN_LOG = False

# --- Production hardening -----------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"client_errors_on_one_line": {"()": "reviewtool.log_filters.ClientErrorsOnOneLine"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["client_errors_on_one_line"]}
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default config gives "django" a console handler of its own (in DEBUG) that
        # the dictConfig above does not remove: every django.request warning printed twice.
        # Listed here, the logger loses it and its records reach the root's handler once,
        # at the root's level.
        "django": {"handlers": [], "level": "NOTSET"},
        "django.db.backends": {"level": "WARNING"},
    },
}
