"""storage-provisioner: tenant buckets, IAM users and access keys on the S3 server."""
