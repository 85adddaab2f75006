/**
 * Usage lines of the coordinator's commands, apart from the commands
 * themselves: the CLI's command table imports these at start-up, and the
 * coordinator (Fastify, Swagger, the dashboard) only when it runs.
 */
export const COORDINATOR_USAGE = 'gatemesh coordinator --data DIR --fleet FLEETDIR [--port N] [--grpc-port N | --no-grpc] [--host ADDR] [--p2p-listen MULTIADDR ...] [--announce MULTIADDR ...] [--bootstrap MULTIADDR ...] [--tls-cert FILE --tls-key FILE] [--max-upload-mb N]'
export const USER_USAGE = 'gatemesh user add|password --data DIR --username NAME [--admin | --role admin|developer|operator ...] [--password-stdin]'
