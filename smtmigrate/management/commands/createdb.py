from __future__ import annotations

import os

from rich.markup import escape

from ...errors import Refused, SmtmigrateError
from ...locations import resolve
from ...target import Admin, build_schema, pg_hba_line, pgpass_line
from ..base import SmtmigrateCommand


class Command(SmtmigrateCommand):
    help = (
        "Create a UTF8 PostgreSQL database for Sumatra, owned by a role (created with "
        "--create-role), with Sumatra's widened schema."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="postgresql://user@host/dbname of the new database")
        parser.add_argument("--owner", help="owning role (default: the URL's user)")
        parser.add_argument("--create-role", action="store_true", help="create the role too")
        parser.add_argument(
            "--password-env",
            metavar="VAR",
            help="with --create-role: read the role's password from this environment variable",
        )
        parser.add_argument("--admin", metavar="URL", help="connect here to create")

    def handle(self, target, owner, create_role, password_env, admin, **options):
        out = self.console()
        password = None
        if password_env:
            if not create_role:
                raise SmtmigrateError("--password-env goes with --create-role")
            password = os.environ.get(password_env)
            if not password:
                raise SmtmigrateError(f"environment variable {password_env} is not set or empty")
        with resolve(target) as store:
            if create_role and store.password and store.password != password:
                # Silently creating the role without it (or with another) would surprise.
                raise SmtmigrateError(
                    "the new role's password is taken from --password-env VAR only (not the "
                    "URL, which shells and process lists show): set VAR to it"
                )
            with Admin(store, admin, as_target_user=False) as server:
                owner = owner or store.settings.get("USER") or server.user
                if server.exists():  # describe() would read it, as the URL's role
                    raise Refused(
                        f"database {store.settings['NAME']} exists (drop-recreate replaces it)"
                    )
                if not create_role and not server.role_exists(owner):
                    # Before check_privileges, whose pg_has_role() fails on a missing role
                    # with no hint of what to do.
                    raise Refused(f"role '{owner}' does not exist (add --create-role)")
                server.check_privileges(owner if not create_role else server.user, drop=False)
                if create_role:
                    if server.role_exists(owner):
                        raise Refused(f"role '{owner}' exists already")
                    server.check_may_create_role()
                made: list[str] = []  # undone, newest first, if a later step fails
                granted = False
                try:
                    if create_role:
                        server.create_role(owner, password)
                        made.append("role")
                        # Names are anyone's strings: escaped, never rich markup.
                        said = f"created role {escape(owner)}"
                        out.print(said + (" with a password" if password else ""))
                        granted = server.become_member(owner)
                    server.create_database(owner)
                    made.append("database")
                    name = escape(store.settings["NAME"])
                    out.print(f"created database {name} (owner {escape(owner)}, UTF8)")
                    with server.target_as_admin() as created:
                        build_schema(created, owner=owner)
                except BaseException as exc:
                    self._undo(server, owner, made, exc)
                    raise
                if granted:  # the admin keeps no membership it did not have
                    server.revoke_membership(owner)
            out.print("built Sumatra's schema (its migrations + the default widening)")
            out.print("For ~/.pgpass (mode 0600), put the password in place of PASSWORD:")
            out.print(f"  {pgpass_line(store)}", markup=False)
            out.print("For pg_hba.conf, if the server asks for passwords:")
            out.print(f"  {pg_hba_line(store, owner)}", markup=False)

    def _undo(self, server: Admin, owner: str, made: list[str], exc: BaseException) -> None:
        """Remove what this run created, so that running it again starts afresh."""
        if "database" in made:
            server.drop_database()
        if "role" in made:
            server.drop_role(owner)  # its memberships go with it
        if made and isinstance(exc, SmtmigrateError):
            exc.args = (f"{exc}; removed the {' and the '.join(reversed(made))} it had created",)
