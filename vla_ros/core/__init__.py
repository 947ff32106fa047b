"""The lowest layer: data types, the configuration schema, input decoding and validation."""
