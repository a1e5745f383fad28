"""Data stages as plain Python over Parquet folders. No Prefect import here."""
