from django.contrib import admin

from . import models

admin.site.site_header = "HKS Functions operations"
admin.site.register(models.Project)
