// Package objsync restores a user's prefix from an object store into a directory and syncs
// the directory back; it decides what to move and reaches storage only through Bucket.
//
// The S3/R2 client lives in internal/s3bucket, in the litestream manner: the engine never
// sees an SDK type, and a test or another store needs only the four Bucket methods.
//
// # Key layout
//
// Under a prefix such as users/<userId>/ (see UserPrefix):
//
//	<prefix>.last-sync        the marker: JSON, written last by a sync that finished
//	<prefix>files/<path>      a regular file or a symbolic link, <path> relative to Dir
//	<prefix>files/<path>/     an empty directory
//
// User files live under files/, so no file a user creates can ever collide with the
// marker, and anything else a later version keeps per user gets a sibling of files/.
// Each object carries its mode, modification time, content SHA-256 and kind as user
// metadata (x-amz-meta-mode, -mtime, -sha256, -type); mtime uses rclone's
// "seconds.nanoseconds" form, so either tool reads the other's times.
//
// # Local state
//
// A manifest of what the bucket holds (size, mtime, mode, hash and ETag per path) lives
// in StateDir, outside the directory the user sees. Sync compares the tree against it by
// size and mtime, so an unchanged tree costs a directory walk and no request at all.
package objsync
