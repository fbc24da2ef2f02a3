// Package webhook deletes a user when the identity provider says so: the HTTP API's
// POST /webhooks/clerk takes Clerk's user.deleted event (delivered by Svix, signed
// per Standard Webhooks), verifies it with Svix's library, acts on each message once,
// and hands the user to the erase function, which runs internal/admin's delete-user.
package webhook
