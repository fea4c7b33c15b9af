from django.urls import path

from predictions import api

app_name = "predictions"

urlpatterns = [
    path("api/predict/", api.predict, name="predict"),
]
