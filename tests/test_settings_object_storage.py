"""Object storage chosen by the environment: MEDIA_STORAGE=s3 and its S3_* settings."""

from tests.test_settings import manage

PROBE = (
    "import sys;"
    "from django.conf import settings;"
    "from django.core.files.storage import default_storage, storages;"
    "media, weights = storages['default'], storages['weights'];"
    "print(type(media).__name__, type(weights).__name__);"
    "print(getattr(media, 'bucket_name', None), getattr(media, 'endpoint_url', None), getattr(media, 'region_name', None));"
    "print(getattr(media, 'location', None), getattr(weights, 'location', None));"
    "print(getattr(media, 'default_acl', None), getattr(media, 'querystring_auth', None),"
    " getattr(media, 'querystring_expire', None), getattr(media, 'file_overwrite', None));"
    "print(getattr(media, 'access_key', None), getattr(media, 'secret_key', None));"
    "print(media.url('images/ab/cd/x y.jpg'));"
    "print('boto3' in sys.modules, 'torch' in sys.modules)"
)

S3_ENVIRONMENT = {
    "MEDIA_STORAGE": "s3",
    "S3_BUCKET": "review-media",
    "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    "S3_REGION": "eu-central-1",
    "AWS_ACCESS_KEY_ID": "key-id",
    "AWS_SECRET_ACCESS_KEY": "key-secret",
    "S3_URL_SECONDS": "45",
}


def probe(tmp_path, **env: str) -> list[str]:
    result = manage("shell", "-v", "0", "-c", PROBE, REVIEWTOOL_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_the_embedded_default_keeps_files_on_disk_and_never_imports_boto3(tmp_path):
    lines = probe(tmp_path)
    assert lines[0] == "FileSystemStorage FileSystemStorage"
    assert lines[5] == "/media/images/ab/cd/x%20y.jpg"
    assert lines[6] == "False False"


def test_s3_puts_media_and_weights_in_one_private_bucket(tmp_path):
    lines = probe(tmp_path, **S3_ENVIRONMENT)
    assert lines[0] == "PrivateS3Storage PrivateS3Storage"
    assert lines[1] == "review-media http://127.0.0.1:9000 eu-central-1"
    assert lines[2] == "media weights"
    # Objects only the bucket owner reads, signed URLs that expire after
    # S3_URL_SECONDS, no name ever overwritten.
    assert lines[3] == "bucket-owner-full-control True 45 False"
    assert lines[4] == "key-id key-secret"
    # A page links to the media view (the permission check), never to the store.
    assert lines[5] == "/media/images/ab/cd/x%20y.jpg"
    # Django start-up with S3 loads boto3, still not torch.
    assert lines[6] == "True False"


def test_the_acl_comes_from_the_environment_and_none_sends_none(tmp_path):
    assert probe(tmp_path, **S3_ENVIRONMENT, S3_DEFAULT_ACL="private")[3].startswith("private ")
    assert probe(tmp_path, **S3_ENVIRONMENT, S3_DEFAULT_ACL="none")[3].startswith("None ")


def test_s3_without_credentials_in_the_environment_leaves_them_to_boto3(tmp_path):
    environment = {k: v for k, v in S3_ENVIRONMENT.items() if not k.startswith("AWS_")}
    assert probe(tmp_path, **environment)[4] == "None None"


def test_s3_without_a_bucket_is_refused_by_name(tmp_path):
    result = manage("check", REVIEWTOOL_VAR_DIR=str(tmp_path), MEDIA_STORAGE="s3")
    assert result.returncode != 0
    assert "MEDIA_STORAGE=s3 needs S3_BUCKET" in result.stderr


def test_an_unknown_media_storage_is_named(tmp_path):
    result = manage("check", REVIEWTOOL_VAR_DIR=str(tmp_path), MEDIA_STORAGE="gcs")
    assert result.returncode != 0
    assert "MEDIA_STORAGE must be 'filesystem' or 's3', got 'gcs'" in result.stderr
