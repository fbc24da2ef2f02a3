// Package preflighttest is test support for infra/preflight and its command: an AWS
// account on one loopback address, whose STS, Secrets Manager and S3 are the local
// stack's emulators (every call's signature verified by an identity.Authority and the
// call decided by its user's policies through the real policy evaluator), and whose
// other services answer with recorded responses of the real APIs' shapes (Replay).
package preflighttest
