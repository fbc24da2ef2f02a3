// Package admin is what an operator does to a running sandgate: list the live
// sandboxes, inspect one user, stop a sandbox, revoke a user, delete a user and
// everything stored of them, and reconcile the capacity counter — on the same state,
// launcher, relay, storage and cleanup code the functions run. The admin command
// (infra/admin), the user-deletion webhook and the demo page's operator panel use it.
package admin
