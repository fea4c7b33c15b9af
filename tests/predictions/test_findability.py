"""Admin messages show names as their owners typed them (issue 17 item 9)."""

from django.urls import reverse


def test_a_message_starting_with_a_version_name_keeps_its_case(stub_model_version_factory, lead, client_for):
    stub_model_version_factory("demo-v1", active=True)
    retrained = stub_model_version_factory("demo-retrain-1", active=False)

    response = client_for(lead).post(
        reverse("admin:predictions_modelversion_changelist"),
        {"action": "activate", "_selected_action": [retrained.pk]},
        follow=True,
    )

    page = response.content.decode()
    assert "demo-retrain-1 is active" in page
    assert "Demo-retrain-1" not in page
