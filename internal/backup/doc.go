// Package backup keeps point-in-time copies of users' prefixes in a backups area of the
// same bucket that no sandbox credential reaches (backups/): each file stored once by
// its SHA-256, one manifest per backup, retention by count and age, and a restore that
// puts a backup back. Every byte moves by server-side copy, never through the caller.
package backup
