"""Data: bring-your-own logs (LOGS folders), generators (synthetic, MovieLens), preparation."""
