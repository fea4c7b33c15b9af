"""The one rule for "which model version" (predictions.selectors.versions)."""

import pytest
from django.core.exceptions import ValidationError

from predictions.models import ModelVersion
from predictions.selectors.dashboard import review_dashboard
from predictions.selectors.versions import model_version_active, model_version_active_id, model_version_or_active
from predictions.services.model_versions import model_version_activate, model_version_revalidate

PENDING = ModelVersion.Validation.PENDING


def test_no_version_at_all_means_no_active_version(db):
    assert model_version_active() is None
    assert model_version_active_id() is None
    assert model_version_or_active(version_id=None) is None


def test_an_inactive_version_is_not_the_active_one_but_can_be_chosen(stub_model_version_factory):
    inactive = stub_model_version_factory("inactive", active=False)

    assert model_version_active() is None
    assert model_version_active_id() is None
    assert model_version_or_active(version_id=None) is None
    assert model_version_or_active(version_id=inactive.pk) == inactive


def test_the_active_valid_version_is_the_active_one(stub_model_version_factory):
    stub_model_version_factory("older", active=False)
    active = stub_model_version_factory("current", active=True)

    assert model_version_active() == active
    assert model_version_active_id() == active.pk
    assert model_version_or_active(version_id=None) == active


def test_an_active_version_that_is_not_valid_counts_as_none(stub_model_version_factory):
    pending = stub_model_version_factory("pending", active=True)
    ModelVersion.objects.filter(pk=pending.pk).update(validation_status=PENDING)

    assert model_version_active() is None
    assert model_version_active_id() is None
    assert model_version_or_active(version_id=None) is None
    # Chosen explicitly, its stored predictions can still be read.
    assert model_version_or_active(version_id=pending.pk) == pending
    # The readers that use the rule agree with it.
    assert review_dashboard().model_version is None


def test_a_chosen_version_that_does_not_exist_is_none_not_the_active_one(stub_model_version_factory):
    active = stub_model_version_factory("current", active=True)

    assert model_version_or_active(version_id=active.pk + 1000) is None


def test_the_services_never_leave_an_active_version_that_is_not_valid(stub_model_version_factory, lead):
    active = stub_model_version_factory("current", active=True)
    pending = stub_model_version_factory("pending", active=False)
    ModelVersion.objects.filter(pk=pending.pk).update(validation_status=PENDING)

    with pytest.raises(ValidationError, match="cannot be activated"):
        model_version_activate(version=pending, user=lead, predict_missing=False)
    with pytest.raises(ValidationError, match="is active"):
        model_version_revalidate(version=active)

    assert model_version_active() == active
