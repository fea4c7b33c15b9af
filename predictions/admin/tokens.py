"""Admin: API tokens for the prediction endpoint.

Anyone who may use the API manages their own tokens here; leads and superusers
(who hold the API token permissions) see everyone's and may create tokens for
others. Adding a token generates it: the token is shown once, in the success
message, and only its hash is kept. The list says how to use one and links the
predict page (the endpoint's own upload page in the browser).
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from predictions.auth import can_use_prediction_api
from predictions.models import ApiToken
from predictions.services.tokens import api_token_create, api_tokens_revoke


def _manages_all_tokens(request) -> bool:
    return request.user.has_perm("predictions.change_apitoken")


def _creates_tokens_for_others(request) -> bool:
    return request.user.has_perm("predictions.add_apitoken")


@admin.action(description="Revoke the selected tokens", permissions=["change"])
def revoke_tokens(modeladmin, request, queryset):
    revoked = api_tokens_revoke(tokens=queryset)
    modeladmin.message_user(
        request, ngettext("Revoked %d token.", "Revoked %d tokens.", revoked) % revoked, messages.SUCCESS
    )


class ApiTokenAddForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]
        help_texts = {"name": "What the token is for (a script, a machine), to recognise it later."}

    def clean_user(self):
        user = self.cleaned_data["user"]
        if not can_use_prediction_api(user):
            raise forms.ValidationError(f"{user} may not use the prediction API (an active staff user who may view images).")
        return user


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "status"]
    list_filter = ["revoked", "created_at", "last_used_at"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    actions = [revoke_tokens]
    fields = ["user", "name", "prefix", "created_at", "last_used_at", "status"]
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "status"]
    change_list_template = "admin/predictions/apitoken/change_list.html"

    # A boolean "revoked" column drew a red cross beside every working token.
    @admin.display(description="status", ordering="revoked")
    def status(self, token: ApiToken) -> str:
        return "revoked" if token.revoked else "active"

    # --- who sees and does what --------------------------------------------------

    def _is_own_or_managed(self, request, obj) -> bool:
        if _manages_all_tokens(request):
            return True
        return can_use_prediction_api(request.user) and (obj is None or obj.user_id == request.user.pk)

    def has_module_permission(self, request):
        return _manages_all_tokens(request) or can_use_prediction_api(request.user)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("predictions.view_apitoken") or self._is_own_or_managed(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._is_own_or_managed(request, obj)

    def has_add_permission(self, request):
        return _creates_tokens_for_others(request) or can_use_prediction_api(request.user)

    def get_queryset(self, request):
        tokens = super().get_queryset(request)
        if _manages_all_tokens(request) or request.user.has_perm("predictions.view_apitoken"):
            return tokens
        return tokens.filter(user=request.user)

    # --- adding generates the token ----------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ApiTokenAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def changelist_view(self, request, extra_context=None):
        context = {"predict_url": request.build_absolute_uri(reverse("predictions:predict")), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    def get_changeform_initial_data(self, request):
        return {"user": request.user.pk, **super().get_changeform_initial_data(request)}

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not _creates_tokens_for_others(request):
            kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw_token = api_token_create(user=obj.user, name=obj.name)
        # The admin goes on with ``obj`` (log entry, redirect): make it the created row.
        obj.pk = token.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html(
                "The token for {} is <code>{}</code>. Copy it now: it is not stored and will not be shown again. "
                'Send it as <code>Authorization: Bearer …</code> to the <a href="{}">predict endpoint</a>.',
                obj.user,
                raw_token,
                reverse("predictions:predict"),
            ),
            messages.WARNING,
        )
