"""The POSIX vocabulary the metadata fold and the mount share: errors, names,
permission rules, inode records and how writes change attributes. It depends on
nothing but the schemas, so the client can use it without importing the server."""
