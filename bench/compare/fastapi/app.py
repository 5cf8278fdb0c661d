"""FastAPI + async SQLAlchemy 2.0 (ORM): the subset of Tenantry's HTTP API
that the load generator (crates/tenantry-server/examples/load.rs) uses,
built the way a careful hand-built multi-tenant app would be, for
bench/compare.sh (issue 17).

Run: uvicorn app:app --workers 2 --no-access-log
Environment: PORT (for the script; uvicorn takes --port), DATABASE_URL
(postgres://…/dbname), ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET.
Schema: ../schema.sql.

Every tenant lives in the shared tables; every tenant-scoped request
verifies its JWT (signature and exp), reads the tenant row by the token's
`tid` and refuses unless it is active, and scopes each query by tenant_id.
"""

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Annotated, Any

import jwt
from fastapi import Body, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import DateTime, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.exceptions import HTTPException as StarletteHTTPException

ADMIN_EMAIL = os.environ["ADMIN_EMAIL"]
ADMIN_PASSWORD = os.environ["ADMIN_PASSWORD"]
JWT_SECRET = os.environ["JWT_SECRET"]
TOKEN_TTL = 900

DATABASE_URL = re.sub(r"^postgres(ql)?://", "postgresql+asyncpg://", os.environ["DATABASE_URL"])
engine = create_async_engine(
    DATABASE_URL,
    pool_size=16,
    max_overflow=0,
    # asyncpg's default (sslmode=prefer) means TLS wherever the server offers
    # it, loopback included; node-postgres and Tenantry's sqlx (built without
    # TLS) talk plain text. The same here, unless the URL asks for TLS.
    connect_args={} if "ssl" in DATABASE_URL.partition("?")[2] else {"ssl": False},
)
Session = async_sessionmaker(engine, expire_on_commit=False)


# --- ids, clocks, passwords -------------------------------------------------


def uuid7() -> uuid.UUID:
    """Time-ordered uuid (v7): 48 bits of Unix ms, version, random, variant, random."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(
        int=(ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    )


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


SCRYPT_N, SCRYPT_R, SCRYPT_P, KEYLEN = 16384, 8, 1, 32


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=dklen)


async def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = await run_in_threadpool(_scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEYLEN)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


async def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = await run_in_threadpool(
        _scrypt, password, base64.b64decode(salt), int(n), int(r), int(p), len(expected)
    )
    return hmac.compare_digest(actual, expected)


def issue_token(claims: dict[str, Any]) -> dict[str, Any]:
    claims = {**claims, "exp": int(time.time()) + TOKEN_TTL}
    return {
        "access_token": jwt.encode(claims, JWT_SECRET, algorithm="HS256"),
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL,
    }


# --- ORM models (../schema.sql) ----------------------------------------------


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    slug: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]
    plan: Mapped[str]
    isolation: Mapped[str] = mapped_column(default="shared")
    status: Mapped[str] = mapped_column(default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"
    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    email: Mapped[str]
    name: Mapped[str]
    role: Mapped[str]
    password_hash: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Record(Base):
    __tablename__ = "records"
    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    collection: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- request and response bodies ----------------------------------------------


class LoginIn(BaseModel):
    email: str
    password: str
    tenant: str | None = None


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class TenantIn(BaseModel):
    name: str
    slug: str
    plan: str
    isolation: str = "shared"


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    slug: str
    name: str
    plan: str
    isolation: str
    status: str
    created_at: datetime


class UserIn(BaseModel):
    email: str
    password: str
    name: str
    role: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    tenant_id: uuid.UUID
    email: str
    name: str
    role: str
    created_at: datetime


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    collection: str
    data: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class RecordPage(BaseModel):
    items: list[RecordOut]
    next_cursor: uuid.UUID | None


# --- errors -------------------------------------------------------------------


class Problem(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def is_unique_violation(err: IntegrityError) -> bool:
    return getattr(err.orig, "sqlstate", None) == "23505" or getattr(err.orig, "pgcode", None) == "23505"


app = FastAPI(title="Tenantry comparison: FastAPI + SQLAlchemy")


@app.exception_handler(Problem)
async def _problem(request: Request, exc: Problem) -> JSONResponse:
    return problem(exc.status, exc.detail)


@app.exception_handler(StarletteHTTPException)
async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return problem(exc.status_code, str(exc.detail))


@app.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem(400, "the body is not valid JSON")
    detail = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
    return problem(422, detail)


# --- dependencies: session, authentication, the tenant gate --------------------


async def get_session() -> AsyncIterator[AsyncSession]:
    async with Session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def claims(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "missing bearer token")
    try:
        # Checks the signature and exp.
        return jwt.decode(token.strip(), JWT_SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError:
        raise Problem(401, "invalid or expired token") from None


ClaimsDep = Annotated[dict[str, Any], Depends(claims)]


async def platform(c: ClaimsDep) -> dict[str, Any]:
    if c.get("role") != "platform":
        raise Problem(403, "platform staff only")
    return c


async def tenant_scope(session: SessionDep, c: ClaimsDep) -> Tenant:
    """The token's tenant, if active.

    Design choice: the tenant row is read on every request (one SELECT by
    primary key), with no cache, so a suspended tenant is refused at once.
    """
    try:
        tid = uuid.UUID(str(c.get("tid")))
    except ValueError:
        raise Problem(403, "a tenant token is required") from None
    tenant = await session.get(Tenant, tid)
    if tenant is None:
        raise Problem(401, "the token names no tenant")
    if tenant.status != "active":
        raise Problem(403, f"tenant is {tenant.status}")
    return tenant


PlatformDep = Annotated[dict[str, Any], Depends(platform)]
TenantDep = Annotated[Tenant, Depends(tenant_scope)]


# --- routes ---------------------------------------------------------------------------


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/readyz")
async def readyz():
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready
        return problem(503, "database unavailable")
    return {"status": "ok"}


@app.post("/api/v1/auth/login", response_model=TokenOut)
async def login(body: LoginIn, session: SessionDep):
    if body.tenant is None:
        ok = hmac.compare_digest(body.email.encode(), ADMIN_EMAIL.encode()) & hmac.compare_digest(
            body.password.encode(), ADMIN_PASSWORD.encode()
        )
        if not ok:
            raise Problem(401, "wrong email or password")
        return issue_token({"sub": "platform-admin", "role": "platform"})
    tenant_id = await session.scalar(select(Tenant.id).where(Tenant.slug == body.tenant))
    if tenant_id is None:
        raise Problem(401, "wrong email or password")
    user = await session.scalar(select(User).where(User.tenant_id == tenant_id, User.email == body.email))
    if user is None or not await verify_password(body.password, user.password_hash):
        raise Problem(401, "wrong email or password")
    return issue_token({"sub": str(user.id), "tid": str(tenant_id), "role": user.role})


@app.post("/api/v1/tenants", status_code=201, response_model=TenantOut)
async def create_tenant(body: TenantIn, session: SessionDep, _: PlatformDep):
    tenant = Tenant(name=body.name, slug=body.slug, plan=body.plan, isolation=body.isolation, status="active")
    session.add(tenant)
    try:
        await session.commit()
    except IntegrityError as err:
        if is_unique_violation(err):
            raise Problem(409, f"slug {body.slug} is taken") from None
        raise
    return tenant


@app.post("/api/v1/users", status_code=201, response_model=UserOut)
async def create_user(
    body: UserIn,
    session: SessionDep,
    _: PlatformDep,
    x_tenant_slug: Annotated[str | None, Header()] = None,
):
    if not x_tenant_slug:
        raise Problem(400, "x-tenant-slug is required")
    tenant_id = await session.scalar(select(Tenant.id).where(Tenant.slug == x_tenant_slug))
    if tenant_id is None:
        raise Problem(404, f"no tenant {x_tenant_slug}")
    user = User(
        tenant_id=tenant_id,
        email=body.email,
        name=body.name,
        role=body.role,
        password_hash=await hash_password(body.password),
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as err:
        if is_unique_violation(err):
            raise Problem(409, f"{body.email} already exists") from None
        raise
    return user


@app.post("/api/v1/collections/{collection}/records", status_code=201, response_model=RecordOut)
async def create_record(
    collection: str,
    data: Annotated[dict[str, Any], Body()],
    tenant: TenantDep,
    session: SessionDep,
):
    now = utcnow()
    record = Record(
        tenant_id=tenant.id, collection=collection, data=data, version=1, created_at=now, updated_at=now
    )
    session.add(record)
    await session.commit()
    return record


@app.get("/api/v1/collections/{collection}/records/{record_id}", response_model=RecordOut)
async def get_record(collection: str, record_id: str, tenant: TenantDep, session: SessionDep):
    # A malformed id names no record: 404, as an absent one.
    try:
        rid = uuid.UUID(record_id)
    except ValueError:
        raise Problem(404, "no such record") from None
    record = await session.get(Record, (tenant.id, collection, rid))
    if record is None:
        raise Problem(404, "no such record")
    return record


@app.get("/api/v1/collections/{collection}/records", response_model=RecordPage)
async def list_records(
    collection: str,
    tenant: TenantDep,
    session: SessionDep,
    limit: int = 20,
    cursor: str | None = None,
):
    limit = min(max(limit, 1), 100)
    query = select(Record).where(Record.tenant_id == tenant.id, Record.collection == collection)
    if cursor:
        try:
            query = query.where(Record.id < uuid.UUID(cursor))
        except ValueError:
            raise Problem(422, "cursor: not a record id") from None
    # One row more than asked tells whether a next page exists.
    rows = (await session.scalars(query.order_by(Record.id.desc()).limit(limit + 1))).all()
    items = rows[:limit]
    return {"items": items, "next_cursor": items[-1].id if len(rows) > limit else None}
