"""Deployment: predict images, export artifacts, serve a page."""
