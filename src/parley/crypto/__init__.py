"""Keys and signatures: Ed25519 device keys and the JWS (EdDSA) tokens they sign."""
