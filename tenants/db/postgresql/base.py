"""PostgreSQL backend that carries the current tenant into row-level security.

Before the first query of every transaction (and again whenever the scope
changes inside one) it runs ``set_config('app.tenant_id', …, true)``: local to
the transaction, so a persistent connection or PgBouncer in transaction mode
never carries a tenant from one request to the next. A query outside a
transaction that has a tenant in scope is wrapped in a short transaction of its
own for the same reason.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.backends.postgresql import base

from tenants.context import NO_TENANT, TenantScope, current_scope

NO_SCOPE = NO_TENANT
SAVEPOINT_STATEMENTS = ("SAVEPOINT ", "RELEASE SAVEPOINT ", "ROLLBACK TO SAVEPOINT ")
SET_SCOPE_SQL = "SELECT set_config('app.tenant_id', %s, true), set_config('app.platform_access', %s, true)"


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The scope the open transaction was given; None when none was set.
        self.rls_scope: TenantScope | None = None
        self.execute_wrappers.append(self._apply_tenant_scope)

    # --- the wrapper -------------------------------------------------------
    def _apply_tenant_scope(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        if isinstance(sql, str) and sql.startswith(SAVEPOINT_STATEMENTS):
            # Transaction control reads no rows, and may run in an aborted transaction.
            return execute(sql, params, many, context)
        scope = current_scope()
        in_transaction = self.in_atomic_block or not self.get_autocommit()
        if in_transaction:
            if self.rls_scope != scope:
                self._set_scope(scope)
            return execute(sql, params, many, context)
        if scope == NO_SCOPE:
            return execute(sql, params, many, context)
        with transaction.atomic(using=self.alias):
            self._set_scope(scope)
            return execute(sql, params, many, context)

    def _set_scope(self, scope: TenantScope) -> None:
        tenant = "" if scope.tenant_id is None else str(scope.tenant_id)
        # Often the first statement on a connection: a lost connection must surface as Django's
        # OperationalError (and mark the connection for closing), as from any other query.
        with self.wrap_database_errors, self.connection.cursor() as cursor:
            cursor.execute(SET_SCOPE_SQL, [tenant, "on" if scope.platform else ""])
        self.rls_scope = scope

    # --- forget the scope when the transaction (or savepoint) that held it ends
    def _commit(self) -> None:
        self.rls_scope = None
        super()._commit()  # type: ignore[misc]

    def _rollback(self) -> None:
        self.rls_scope = None
        super()._rollback()  # type: ignore[misc]

    def _savepoint_rollback(self, sid: str) -> None:
        # A rolled-back savepoint also undoes a set_config made inside it. Reset
        # after: the ROLLBACK TO SAVEPOINT itself must not try to set the scope.
        super()._savepoint_rollback(sid)  # type: ignore[misc]
        self.rls_scope = None

    def _close(self) -> None:
        self.rls_scope = None
        super()._close()  # type: ignore[misc]

    def init_connection_state(self) -> None:
        super().init_connection_state()
        self.rls_scope = None
        self._refuse_role_that_bypasses_rls()

    def _refuse_role_that_bypasses_rls(self) -> None:
        """Fail closed: a superuser or BYPASSRLS role would silently ignore every policy."""
        if getattr(settings, "RLS_ALLOW_BYPASS_ROLE", False):
            return
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT rolname, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
        if row and row[1]:
            raise ImproperlyConfigured(
                f"The database role {row[0]!r} bypasses row-level security. Connect as an ordinary "
                "role (see README: `make db`), or set RLS_ALLOW_BYPASS_ROLE for maintenance only."
            )
