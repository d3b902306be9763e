/*
 * auth_handlers.h - the HTTP endpoints of accounts and dashboard sign-in
 * under /api/v1/auth/ (see docs/auth.md): register, verify-email,
 * resend-verification, login, 2fa/verify, 2fa/setup, 2fa/enable,
 * 2fa/disable, refresh, logout, forgot-password, reset-password, me,
 * sessions.
 */
#ifndef FRAPI_API_AUTH_HANDLERS_H
#define FRAPI_API_AUTH_HANDLERS_H

struct http_server;
struct auth_service;

/* Adds every route of the accounts service to srv; the routes that need
 * a signed-in user get auth_guard as their before-body hook. */
void auth_handlers_register(struct http_server *srv, struct auth_service *svc);

#endif
