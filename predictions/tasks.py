"""django-q2 entry points. Thin: take ids, call a service, return.

Anything that imports torch is imported inside the function body, so the
cluster's parent process never loads it (CUDA must not be touched before the
workers fork).
"""
