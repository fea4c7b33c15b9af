"""Admin: the label taxonomy and its review-screen keys.

A reviewer's key is a habit, so a key typed here is checked against every other
label's key on the review screen (predictions.services.labels.label_key_conflicts):
on the add and change pages, and across the rows of the changelist's editable
columns at once (so two labels can swap keys in one save). A new label left
without a key gets the next free digit, which no existing label shows.
"""

from django import forms
from django.contrib import admin
from django.db.models import Max
from django.forms.models import BaseModelFormSet

from predictions.models import Label
from predictions.services.labels import label_create, label_key_conflicts

KEY_HELP = (
    "Keyboard key on the review screen, unique. Leave it blank on a new label for the next free digit; "
    "s, z and ? are the screen's own."
)


class LabelForm(forms.ModelForm):
    class Meta:
        model = Label
        fields = ["name", "order", "key"]
        help_texts = {"key": KEY_HELP}

    def clean_key(self):
        key = self.cleaned_data.get("key", "")
        error = label_key_conflicts(proposed={self.instance.pk: key}).get(self.instance.pk)
        if error:
            raise forms.ValidationError(error, code="key_taken")
        return key


class LabelChangelistFormSet(BaseModelFormSet):
    """The changelist's rows: their keys are checked together, after each row's own checks."""

    def clean(self):
        super().clean()
        forms_by_id = {form.instance.pk: form for form in self.forms if form.cleaned_data}
        proposed = {pk: form.cleaned_data.get("key", "") for pk, form in forms_by_id.items()}
        for pk, error in label_key_conflicts(proposed=proposed).items():
            forms_by_id[pk].add_error("key", error)


class ChangelistKeyForm(forms.ModelForm):
    """A changelist row: its key is checked with the other rows by LabelChangelistFormSet."""

    class Meta:
        model = Label
        fields = ["order", "key"]


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    form = LabelForm
    list_display = ["name", "order", "key"]
    list_editable = ["order", "key"]
    search_fields = ["name"]

    def get_changelist_form(self, request, **kwargs):
        return ChangelistKeyForm

    def get_changelist_formset(self, request, **kwargs):
        return super().get_changelist_formset(request, formset=LabelChangelistFormSet, **kwargs)

    def get_changeform_initial_data(self, request):
        # A new label goes at the end of the taxonomy unless the Lead says otherwise.
        top = Label.objects.aggregate(top=Max("order"))["top"]
        return {"order": 0 if top is None else top + 1, **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        created = label_create(name=obj.name, order=obj.order, key=obj.key)
        # The admin's log entry and redirect continue with the created row.
        obj.pk, obj.key = created.pk, created.key
