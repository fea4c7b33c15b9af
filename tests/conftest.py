"""Fixtures shared by the whole suite: tiny images, a random-weight checkpoint,
an active model version and one user per role.

Everything is built here, in memory or in the temp folders of tests/settings.py;
nothing is downloaded.
"""

import io
from collections.abc import Callable

import pytest
from PIL import Image as PILImage

DEMO_CLASSES = ["circle", "square", "triangle", "star", "cross"]
TINY_INPUT_SIZE = 32


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30), **save_kwargs
) -> bytes:
    """A small solid-colour image file in the given format."""
    buffer = io.BytesIO()
    mode = "RGB" if fmt != "PNG" or "mode" not in save_kwargs else save_kwargs.pop("mode")
    PILImage.new(mode, size, color).save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    """Factory for distinct small image files: make_image(seed=3) differs from make_image(seed=4)."""

    def make(seed: int = 0, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
        color = ((seed * 53) % 256, (seed * 97 + 40) % 256, (seed * 31 + 90) % 256)
        return image_bytes(fmt, size, color)

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint_bytes() -> bytes:
    """A random-weight five-class checkpoint of the default architecture, with full metadata."""
    import torch

    from ml.checkpoints import CheckpointMetadata, save_checkpoint
    from ml.models import DEFAULT_ARCH, build_model

    torch.manual_seed(0)
    model = build_model(DEFAULT_ARCH, len(DEMO_CLASSES))
    buffer = io.BytesIO()
    save_checkpoint(
        buffer,
        model=model,
        metadata=CheckpointMetadata(arch=DEFAULT_ARCH, class_names=list(DEMO_CLASSES), input_size=TINY_INPUT_SIZE),
    )
    return buffer.getvalue()


@pytest.fixture
def model_version_factory(db, tiny_checkpoint_bytes):
    """Create a validated ModelVersion (and its Labels) from checkpoint bytes."""
    from django.core.files.base import ContentFile

    from predictions.models import ModelVersion
    from predictions.services.labels import labels_ensure

    saved: list = []

    def create(
        name: str = "tiny-v1",
        *,
        active: bool = True,
        checkpoint: bytes | None = None,
        class_names: list[str] | None = None,
        input_size: int = TINY_INPUT_SIZE,
        arch: str = "resnet18_custom_head",
    ) -> ModelVersion:
        class_names = class_names or list(DEMO_CLASSES)
        labels_ensure(names=class_names)
        version = ModelVersion(
            name=name,
            arch=arch,
            class_names=class_names,
            input_size=input_size,
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
            validation_status=ModelVersion.Validation.VALID,
        )
        version.checkpoint.save(f"{name}.pth", ContentFile(checkpoint or tiny_checkpoint_bytes), save=False)
        saved.append(version.checkpoint)
        if active:
            ModelVersion.objects.filter(is_active=True).update(is_active=False)
            version.is_active = True
        version.save()
        return version

    yield create
    # Each checkpoint is ~45 MB: a suite that kept them all would fill a disk.
    for checkpoint in saved:
        checkpoint.storage.delete(checkpoint.name)


@pytest.fixture
def active_model_version(model_version_factory):
    return model_version_factory()


def _user_in_group(django_user_model, username: str, group_name: str | None, **extra):
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.management import create_contenttypes

    from predictions.roles import role_groups_ensure

    if not Permission.objects.exists():
        # After a serialized-rollback test Django flushes without post_migrate: no content
        # types and no permissions are left for the groups to hold.
        for app_config in apps.get_app_configs():
            create_contenttypes(app_config, verbosity=0)
            create_permissions(app_config, verbosity=0)
    # A transactional test's flush empties the groups the data migration made.
    role_groups_ensure(group_model=Group, permission_model=Permission)

    user = django_user_model.objects.create_user(
        username=username, password="pw-for-tests-only", is_staff=True, **extra
    )
    if group_name:
        user.groups.add(Group.objects.get(name=group_name))
    return user


@pytest.fixture
def uploader(db, django_user_model):
    return _user_in_group(django_user_model, "uploader", "Uploaders")


@pytest.fixture
def reviewer(db, django_user_model):
    return _user_in_group(django_user_model, "reviewer", "Reviewers")


@pytest.fixture
def second_reviewer(db, django_user_model):
    return _user_in_group(django_user_model, "reviewer2", "Reviewers")


@pytest.fixture
def lead(db, django_user_model):
    return _user_in_group(django_user_model, "lead", "Leads")


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-for-tests-only")


@pytest.fixture
def client_for(client):
    """client_for(user) returns a test client logged in as that user."""
    from django.test import Client

    def login(user) -> Client:
        logged_in = Client()
        logged_in.force_login(user)
        return logged_in

    return login
