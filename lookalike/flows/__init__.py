"""The default flows, shipped as package data: index.yml and query.yml."""
