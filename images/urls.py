from django.conf import settings
from django.urls import path

from . import views

app_name = "images"

# Media is private: this view is the only thing that serves MEDIA_URL.
urlpatterns = [
    path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", views.media_file, name="media"),
]
