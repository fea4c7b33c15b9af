from django.urls import path

app_name = "predictions"

urlpatterns: list = []
