"""How an owner is told: one module per channel (email, webhook)."""
