from django.urls import path

app_name = "images"

urlpatterns: list = []
