// Package lambdamain is the start-up every Lambda main shares: read the configuration once,
// build the handler and hand it to the runtime, or log why not and exit 1 (fail closed).
package lambdamain
