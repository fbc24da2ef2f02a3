// Package userid is the one rule for sandgate's user ids (user_ and 1–64 ASCII letters or
// digits, never case-folded), shared by everything that names a user's data, lease or connection.
package userid
