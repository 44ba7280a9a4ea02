"""The auth service: owns users, issues and validates JWTs."""
