"""Cloud side: data, models, training, evaluation, export and the FastAPI service."""
