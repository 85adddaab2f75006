/**
 * Who may use what. A user or API token holds roles; each role grants a set
 * of services; every API route names the service it belongs to (and may
 * additionally require a role), and a caller whose roles do not grant it
 * gets a 403.
 */

export const ROLES = ['admin', 'developer', 'operator'] as const
export type UserRole = typeof ROLES[number]

export const SERVICES = ['models', 'deployments', 'nodes', 'logs', 'users', 'predict', 'notifications'] as const
export type Service = typeof SERVICES[number]

/**
 * - admin: everything, including users, API tokens and enrollment.
 * - developer: uploads models and deploys them; sees nodes and logs to debug what they deployed.
 * - operator: watches nodes and logs, calls predict, receives notifications.
 */
export const SERVICES_BY_ROLE: Readonly<Record<UserRole, readonly Service[]>> = {
  admin: SERVICES,
  developer: ['models', 'deployments', 'nodes', 'logs', 'predict'],
  operator: ['nodes', 'logs', 'predict', 'notifications']
}

/** The union of the services of `roles`, in the order of SERVICES. */
export function servicesOf (roles: readonly string[]): Service[] {
  const granted = new Set<Service>()
  for (const role of roles) for (const s of SERVICES_BY_ROLE[role as UserRole] ?? []) granted.add(s)
  return SERVICES.filter(s => granted.has(s))
}

export function isRole (value: string): value is UserRole {
  return (ROLES as readonly string[]).includes(value)
}
