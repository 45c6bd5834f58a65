"""The Hugging Face Hub adapter, the one place huggingface_hub is imported: a client made with the farm's
endpoint and token (`client.Hub`: model info, downloads, a repo's tree and head, one commit), and the Hub's
errors in the farm's words in one table with the retry and `Retry-After` rule (`errors`), as store/s3_errors.py
is for S3. Sources (planning/sources.py) and publishing (distribute/hub.py) both go through it.

May import the foundation modules only (the Hub's client and its errors, on their own; tests/test_structure.py
holds the table).
"""
