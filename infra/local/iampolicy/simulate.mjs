// The local stack's policy evaluator process: @cloud-copilot/iam-simulate (AGPL-3.0), run
// only as this separate child process of the local stack, never linked into anything
// deployed. Usage: node simulate.mjs <node_modules directory>
//
// Protocol: one JSON object per line each way. The first line out is
// {"ready":true,"version":"…"} (or {"fatal":"…"} before exiting). Each request line
//   {"id", "principal", "action", "resource", "account", "identityPolicies":[{"name","policy"}],
//    "sessionPolicy", "resourcePolicy", "context": {key: [values]}}
// is answered, in any order, by one line
//   {"id", "result": "Allowed"|"ExplicitlyDenied"|"ImplicitlyDenied",
//    "allowing": [stmt], "denying": [stmt], "nearest": [near], "ignoredContextKeys": [...]}
// or {"id", "error": "…"} when iam-simulate refuses the simulation (an unknown action, a
// policy it cannot read, a condition operator it does not know).
//   stmt: {"policyType": "identity"|"session"|"resource", "policyId", "statement"}, where
//         statement is the Sid or the 1-based index of the statement in its policy;
//   near: stmt plus {"resourceMatch", "conditionMatch", "failedConditions": ["Op key"]}:
//         an Allow statement whose action matched but whose resource or condition did not.
// "unexplained": true marks an implicit denial of a resource containing "*" whose
// analysis iam-simulate did not keep: "nearest" then lists the Allow statements whose
// action matches, without saying what else failed.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const wantVersion = '0.1.173';

function fatal(msg) {
  process.stdout.write(JSON.stringify({ fatal: msg }) + '\n', () => process.exit(2));
}

async function load(nodeModules) {
  const dir = join(nodeModules, '@cloud-copilot', 'iam-simulate');
  let pkg;
  try {
    pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  } catch (e) {
    throw new Error(`@cloud-copilot/iam-simulate is not installed in ${nodeModules} (run npm ci at the repository root): ${e.message}`);
  }
  if (pkg.version !== wantVersion) {
    throw new Error(`@cloud-copilot/iam-simulate ${pkg.version} is installed in ${nodeModules}, the local stack is pinned to ${wantVersion} (run npm ci at the repository root)`);
  }
  const entry = pkg.exports?.['.']?.import;
  if (!entry) {
    throw new Error('@cloud-copilot/iam-simulate has no ESM entry point');
  }
  return { sim: await import(pathToFileURL(join(dir, entry)).href), version: pkg.version };
}

function statementRef(policyType, analysis) {
  const st = analysis.statement;
  return {
    policyType,
    policyId: policyType === 'resource' ? 'resource' : analysis.policyId,
    statement: st.sid() ?? String(st.index())
  };
}

function asList(x) {
  if (x === undefined || x === null) return [];
  return Array.isArray(x) ? x : [x];
}

// The analyses of one simulated request, by policy type.
function sections(analysis) {
  const out = [];
  if (analysis.sessionAnalysis) out.push(['session', analysis.sessionAnalysis]);
  if (analysis.identityAnalysis) out.push(['identity', analysis.identityAnalysis]);
  if (analysis.resourceAnalysis) out.push(['resource', analysis.resourceAnalysis]);
  return out;
}

function missingOperator(analysis) {
  for (const [, a] of sections(analysis)) {
    for (const list of [a.allowStatements, a.denyStatements, a.unmatchedStatements]) {
      for (const s of list ?? []) {
        for (const c of s.explain?.conditions ?? []) {
          if (c.missingOperator) return `${c.operator} on ${c.conditionKeyValue}`;
        }
      }
    }
  }
  return null;
}

function summarize(analysis) {
  const allowing = [];
  const denying = [];
  const nearest = [];
  for (const [type, a] of sections(analysis)) {
    for (const s of a.allowStatements ?? []) allowing.push(statementRef(type, s));
    for (const s of a.denyStatements ?? []) denying.push(statementRef(type, s));
    for (const s of a.unmatchedStatements ?? []) {
      if (!s.statement.isAllow() || !s.actionMatch) continue;
      if (type === 'resource' && s.principalMatch === 'NoMatch') continue;
      const failed = asList(s.explain?.conditions)
        .filter((c) => !c.matches)
        .map((c) => `${c.operator} ${c.conditionKeyValue}${c.failedBecauseMissing ? ' (missing from the request)' : ''}${c.failedBecauseArray ? ' (multi-valued key needs ForAnyValue/ForAllValues)' : ''}`);
      nearest.push({ ...statementRef(type, s), resourceMatch: !!s.resourceMatch, conditionMatch: s.conditionMatch === 'Match', failedConditions: failed });
    }
  }
  return { allowing, denying, nearest };
}

// actionPattern turns an IAM action pattern (case-insensitive, * and ?) into a RegExp.
function actionPattern(p) {
  const body = p.split('').map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
  return new RegExp('^' + body + '$', 'i');
}

function statementActionMatches(st, action) {
  const any = (list) => asList(list).some((p) => actionPattern(p).test(action));
  if (st.Action !== undefined) return any(st.Action);
  if (st.NotAction !== undefined) return !any(st.NotAction);
  return false;
}

// actionMatches lists the Allow statements of the session and identity policies whose
// action matches req's: the nearest statements when iam-simulate kept no analysis.
function actionMatches(req) {
  const out = [];
  const scan = (type, name, policy) => {
    asList(policy?.Statement).forEach((st, i) => {
      if (st.Effect !== 'Allow' || !statementActionMatches(st, req.action)) return;
      out.push({ policyType: type, policyId: name, statement: st.Sid ?? String(i + 1), resourceMatch: false, conditionMatch: false, failedConditions: [] });
    });
  };
  if (req.sessionPolicy) scan('session', 'SessionPolicy', req.sessionPolicy);
  for (const p of req.identityPolicies ?? []) scan('identity', p.name, p.policy);
  return out;
}

const messages = {
  'invalid.principal': 'the principal is not one iam-simulate understands',
  'invalid.service': 'unknown service (not in the service authorization reference)',
  'invalid.action': 'unknown action (not in the service authorization reference)',
  'must.use.wildcard': 'the action has no resource type and is authorised on "*" only',
  'no.resource.types': "the resource ARN matches none of the action's resource types",
  'multiple.resource.types': "the resource ARN matches several of the action's resource types",
  'session.policy.invalid.principal': 'a session policy needs a role session principal',
  'policy.errors': 'a policy is invalid'
};

function errorText(errors) {
  const parts = [messages[errors.message] ? `${messages[errors.message]} (${errors.message})` : errors.message];
  const add = (label, list) => {
    for (const e of list ?? []) parts.push(`${label}: ${e.path ?? ''} ${e.message ?? JSON.stringify(e)}`.trim());
  };
  add('session policy', errors.sessionPolicyErrors);
  for (const [name, list] of Object.entries(errors.identityPolicyErrors ?? {})) add(`policy ${name}`, list);
  add('resource policy', errors.resourcePolicyErrors);
  return parts.join('; ');
}

async function answer(sim, req) {
  const simulation = {
    request: {
      principal: req.principal,
      action: req.action,
      resource: { resource: req.resource, accountId: req.account },
      contextVariables: req.context ?? {}
    },
    identityPolicies: req.identityPolicies ?? [],
    serviceControlPolicies: [],
    resourceControlPolicies: []
  };
  if (req.sessionPolicy) simulation.sessionPolicy = req.sessionPolicy;
  if (req.resourcePolicy) simulation.resourcePolicy = req.resourcePolicy;
  const res = await sim.runSimulation(simulation, { simulationMode: 'Strict' });
  if (res.resultType === 'error') {
    return { id: req.id, error: errorText(res.errors) };
  }
  let analysis;
  let ignored = [];
  if (res.resultType === 'single') {
    analysis = res.result.analysis;
    ignored = res.result.ignoredContextKeys ?? [];
  } else {
    // A resource containing "*" (ListTasks on "*"): AWS matches the policies against
    // the request's resource as a literal string. iam-simulate evaluates that literal
    // first; use that run, and refuse when it did not keep it.
    const exact = res.results.find((r) => r.resourcePattern === req.resource);
    if (!exact) {
      if (res.overallResult === 'ImplicitlyDenied' && res.results.length === 0) {
        // iam-simulate drops an implicitly denied literal run: the decision stands, and
        // the nearest statements are those whose action matches, unexplained.
        return { id: req.id, result: 'ImplicitlyDenied', allowing: [], denying: [], nearest: actionMatches(req), ignoredContextKeys: [], unexplained: true };
      }
      if (res.overallResult !== 'Allowed') {
        return { id: req.id, error: `wildcard resource ${req.resource}: no exact evaluation (result ${res.overallResult})` };
      }
      // iam-simulate re-ran the allowed literal with the policies' own patterns:
      // the statements that allowed any of those runs allowed the literal.
      const allowing = [];
      const seen = new Set();
      for (const r of res.results.filter((r) => r.analysis.result === 'Allowed')) {
        for (const ref of summarize(r.analysis).allowing) {
          const k = JSON.stringify(ref);
          if (!seen.has(k)) {
            seen.add(k);
            allowing.push(ref);
          }
        }
      }
      return { id: req.id, result: 'Allowed', allowing, denying: [], nearest: [], ignoredContextKeys: res.results[0]?.ignoredContextKeys ?? [] };
    }
    analysis = exact.analysis;
    ignored = exact.ignoredContextKeys ?? [];
  }
  const missing = missingOperator(analysis);
  if (missing) {
    return { id: req.id, error: `condition operator not supported by iam-simulate: ${missing}` };
  }
  return { id: req.id, result: analysis.result, ...summarize(analysis), ignoredContextKeys: ignored };
}

async function main() {
  const nodeModules = process.argv[2];
  if (!nodeModules) {
    fatal('usage: node simulate.mjs <node_modules directory>');
    return;
  }
  let sim, version;
  try {
    ({ sim, version } = await load(nodeModules));
  } catch (e) {
    fatal(e.message);
    return;
  }
  const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  write({ ready: true, version });
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  const pending = new Set();
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      write({ id: 0, error: `bad request line: ${e.message}` });
      return;
    }
    const p = answer(sim, req)
      .then(write, (e) => write({ id: req.id, error: `iam-simulate failed: ${e?.stack ?? e}` }))
      .finally(() => pending.delete(p));
    pending.add(p);
  });
  // Standard input closed: the stack is stopping. Answer what is in flight, then exit.
  rl.on('close', () => Promise.allSettled([...pending]).then(() => process.exit(0)));
}

main();
