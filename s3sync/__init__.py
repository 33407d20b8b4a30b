"""s3sync: publish ML datasets to S3 as verified tar parts and pull them back, extracted while downloading."""
