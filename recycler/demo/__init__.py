"""The demo pool: small character-level models trained here on synthetic skills."""
