"""Django: audit logins, failed logins and permission changes from signals.

Run: python examples/integrations_django.py   (needs ``pip install django``)

A one-file Django project (in-memory SQLite) served through the WSGI
AuditMiddleware: each request binds its request id and client address, a
Django middleware binds the authenticated user as the actor, and signal
receivers turn Django's auth events into audit events.
"""

from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="example-only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        f"{__name__}.audit_actor_middleware",  # after authentication
    ],
)
django.setup()

from django.contrib.auth import authenticate, login  # noqa: E402
from django.contrib.auth.models import Permission, User  # noqa: E402
from django.contrib.auth.signals import (  # noqa: E402
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db.models.signals import m2m_changed  # noqa: E402
from django.dispatch import receiver  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

import auditloop  # noqa: E402
from auditloop.integrations.wsgi import AuditMiddleware  # noqa: E402
from auditloop.sinks import MemorySink  # noqa: E402

# -- what goes in your app's audit.py -------------------------------------------


def _user_actor(user: Any) -> dict[str, Any]:
    """The Django user as an actor, keeping the client address bound per request."""
    with auditloop.bind() as bound:  # an empty bind() yields the current fields
        outer = bound.get("actor")
    actor = {"id": str(user.pk), "type": "user", "name": user.get_username()}
    if isinstance(outer, dict) and outer.get("ip"):
        actor["ip"] = outer["ip"]
    return actor


def audit_actor_middleware(get_response: Any) -> Any:
    """Bind the authenticated user as the actor of every event in the request."""

    def middleware(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return get_response(request)
        with auditloop.bind(actor=_user_actor(request.user)):
            return get_response(request)

    return middleware


@receiver(user_logged_in)
def _logged_in(sender: Any, request: HttpRequest, user: Any, **_: Any) -> None:
    auditloop.emit("user.login", actor=_user_actor(user), category="authentication")


@receiver(user_logged_out)
def _logged_out(sender: Any, request: HttpRequest, user: Any, **_: Any) -> None:
    if user is not None:
        auditloop.emit(
            "user.logout", actor=_user_actor(user), category="authentication"
        )


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], **_: Any) -> None:
    # Django has already masked the password; auditloop would redact it anyway.
    auditloop.emit(
        "user.login",
        outcome="failure",
        category="authentication",
        reason="bad credentials",
        username=credentials.get("username"),
    )


@receiver(m2m_changed, sender=User.user_permissions.through)
@receiver(m2m_changed, sender=User.groups.through)
def _permissions_changed(
    sender: Any, instance: Any, action: str, model: Any, pk_set: Any, **_: Any
) -> None:
    verbs = {"post_add": "grant", "post_remove": "revoke", "post_clear": "revoke"}
    if action not in verbs or not isinstance(instance, User):
        return
    kind = "group" if model.__name__ == "Group" else "permission"
    names = sorted(str(obj) for obj in model.objects.filter(pk__in=pk_set or ()))
    auditloop.emit(
        f"permission.{verbs[action]}",
        target=f"user:{instance.pk}",
        category="permission",
        **{kind + "s": names or "all"},
    )


# -- a tiny project to run it ---------------------------------------------------


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    if user is None:
        return HttpResponse(status=401)
    login(request, user)
    return HttpResponse("welcome")


def grant_view(request: HttpRequest) -> HttpResponse:
    target = User.objects.get(username=request.POST["username"])
    target.user_permissions.add(Permission.objects.get(codename="change_user"))
    return HttpResponse("granted")


urlpatterns = [path("login", login_view), path("grant", grant_view)]
# wsgi.py: wrap Django's application.
application = AuditMiddleware(get_wsgi_application(), audit_requests=["POST /grant"])

if __name__ == "__main__":
    from werkzeug.test import Client

    call_command("migrate", verbosity=0)
    User.objects.create_user("admin", password="correct horse")
    User.objects.create_user("bob", password="battery staple")

    sink = MemorySink()
    auditloop.configure(service="intranet", sinks=[sink])
    client = Client(application)  # keeps the session cookie between requests
    peer = {"REMOTE_ADDR": "203.0.113.5"}
    client.post(
        "/login", data={"username": "admin", "password": "wrong"}, environ_base=peer
    )
    client.post(
        "/login",
        data={"username": "admin", "password": "correct horse"},
        environ_base=peer,
    )
    client.post(
        "/grant",
        data={"username": "bob"},
        headers={"X-Request-ID": "req-9"},
        environ_base=peer,
    )

    for event in sink.events:
        actor = event.actor and f"{event.actor.id}/{event.actor.name}@{event.actor.ip}"
        request_id = event.context.get("request_id", "-")[:8]
        print(f"{event.action:17} {event.outcome:8} {request_id:8} {actor}")
