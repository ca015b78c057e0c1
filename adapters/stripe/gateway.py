"""Stripe outbound: a small port and its implementation on ``stripe.StripeClient``.

Every POST carries a deterministic ``Idempotency-Key`` derived from the Sluice command that asked
for it (never a random one), so a retry, a redelivered message or a crash repeats nothing at
Stripe. Calls on connected accounts pass ``stripe_account``. Timeouts and retries are explicit.
Stripe's errors become ``GatewayError``s of one of three classes (``adapters.stripe.errors``,
re-exported here): retry, hold (configuration an operator must fix) or refuse.
"""

from __future__ import annotations

import hashlib
import textwrap
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import stripe
import urllib3

from adapters.stripe.errors import (
    FAILURE_CLASSES,
    HOLD,
    REFUSE,
    RETRY,
    FailureClass,
    classify,
    stripe_code,
)
from ledger.errors import SluiceError
from ledger.limits import IDEMPOTENCY_KEY_LEN_MAX
from ledger.payouts import FAILURE_CODE_MAX_LEN, HOLD_MESSAGE_LEN_MAX

STRIPE_TIMEOUT_S = 30
STRIPE_MAX_NETWORK_RETRIES = 3
# Kept-alive connections per host: one per thread calling Stripe at once (a worker process runs
# 4 to 8). Past it a call opens a connection of its own and drops it after (never waits).
STRIPE_CONNECTIONS_KEPT = 16
BALANCE_TRANSACTIONS_PAGE_SIZE = 100
BALANCE_TRANSACTIONS_MAX = 1_000_000  # an explicit bound on one auto-paginated listing
__all__ = [
    "FAILURE_CLASSES",
    "HOLD",
    "REFUSE",
    "RETRY",
    "FailureClass",
    "GatewayError",
    "StripeClientGateway",
    "StripeGateway",
    "StripeObject",
    "classify",
    "idempotency_key",
    "map_stripe_error",
]


class GatewayError(SluiceError):
    """Stripe refused or could not be reached. ``failure_class`` says what to do about it
    (``adapters.stripe.errors``: retry, hold or refuse); ``retryable`` (kept for callers that
    only ask that) is true for the retry class alone: same idempotency key, may succeed."""

    code = "stripe_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        failure_class: FailureClass | None = None,
        retryable: bool | None = None,
        stripe_code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message, param=param)
        if failure_class is None:
            failure_class = RETRY if retryable else REFUSE
        if failure_class not in FAILURE_CLASSES:
            raise ValueError(f"unknown failure class {failure_class!r}")
        self.failure_class: FailureClass = failure_class
        self.retryable = failure_class == RETRY
        self.stripe_code = stripe_code
        self.stripe_http_status = http_status
        if stripe_code:
            self.code = f"stripe_{stripe_code}"

    @property
    def held(self) -> bool:
        """A configuration or permission problem a person must fix; nothing was refused."""
        return self.failure_class == HOLD

    @property
    def reason_code(self) -> str:
        """A short code for the ledger (letters, digits, _): Stripe's code, or what the status
        says when Stripe gave none (a 401 or 403 has none)."""
        by_status = {401: "authentication_error", 403: "permission_error"}
        raw = self.stripe_code or by_status.get(self.stripe_http_status or 0) or "stripe_error"
        code = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in raw)
        return code[:FAILURE_CODE_MAX_LEN]

    @property
    def reason_message(self) -> str:
        """Stripe's message as one printable line the ledger can keep."""
        line = " ".join("".join(ch for ch in str(self) if ch.isprintable() or ch.isspace()).split())
        return line[:HOLD_MESSAGE_LEN_MAX]


def map_stripe_error(error: stripe.StripeError) -> GatewayError:
    """Stripe's exception → a GatewayError of one class (``adapters.stripe.errors.classify``).
    The code is Stripe's ``code``, or the ``type`` for an idempotency error (which has none)."""
    status = getattr(error, "http_status", None)
    code = stripe_code(error)
    if not code and isinstance(error, stripe.IdempotencyError) and status != 409:
        code = "idempotency_error"
    param = getattr(error, "param", None)
    message = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return GatewayError(
        message,
        failure_class=classify(error),
        stripe_code=code,
        param=param,
        http_status=status,
    )


def idempotency_key(*parts: str) -> str:
    """A deterministic key from the command's natural key, within Stripe's 255 characters."""
    key = "sluice:" + ":".join(parts)
    if len(key) <= IDEMPOTENCY_KEY_LEN_MAX:
        return key
    return "sluice:sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class StripeObject:
    """What Sluice needs back from a Stripe call: the id, and the raw object for facts."""

    id: str
    data: dict[str, Any]


class StripeGateway(ABC):
    """The port. Every method that changes something takes the idempotency key explicitly."""

    @abstractmethod
    def create_transfer(
        self,
        *,
        destination: str,
        amount: int,
        currency: str,
        idempotency_key: str,
        source_transaction: str | None = None,
        transfer_group: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StripeObject: ...

    @abstractmethod
    def reverse_transfer(
        self,
        transfer_id: str,
        *,
        amount: int | None,
        idempotency_key: str,
        refund_application_fee: bool = False,
    ) -> StripeObject: ...

    @abstractmethod
    def create_refund(
        self,
        *,
        charge: str,
        amount: int | None,
        idempotency_key: str,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
        stripe_account: str | None = None,
    ) -> StripeObject: ...

    @abstractmethod
    def refund_application_fee(
        self, fee_id: str, *, amount: int | None, idempotency_key: str
    ) -> StripeObject: ...

    @abstractmethod
    def create_payout(
        self,
        *,
        account: str,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: dict[str, str] | None = None,
    ) -> StripeObject: ...

    @abstractmethod
    def list_payouts(self, *, account: str, limit: int = 100) -> list[StripeObject]: ...

    @abstractmethod
    def retrieve_balance(self, *, account: str | None = None) -> dict[str, Any]: ...

    @abstractmethod
    def balance_transactions(
        self, *, account: str | None = None, **filters: Any
    ) -> Iterator[StripeObject]: ...

    @abstractmethod
    def retrieve(
        self, kind: str, object_id: str, *, account: str | None = None, parent: str | None = None
    ) -> StripeObject:
        """Any object Sluice folds, fetched fresh (events carry a snapshot that may be stale):
        kind is one of RETRIEVABLE; ``parent`` is the transfer of a reversal."""

    @abstractmethod
    def list_refunds(self, *, charge: str, account: str | None = None) -> list[StripeObject]: ...

    @abstractmethod
    def find_transfers(self, *, destination: str, source_transaction: str) -> list[StripeObject]:
        """Transfers to ``destination`` funded by a charge (among its newest 100)."""

    # --- Importing an existing platform (``adapters.stripe.importer``) ----------------------

    @abstractmethod
    def list_accounts(self) -> Iterator[StripeObject]:
        """Every connected account (``GET /v1/accounts``, auto-paginated, bounded)."""

    @abstractmethod
    def list_application_fees(self) -> Iterator[StripeObject]:
        """The platform's application fees, newest first (auto-paginated, bounded)."""


def _obj(value: Any) -> StripeObject:
    data = value.to_dict() if hasattr(value, "to_dict") else dict(value)
    return StripeObject(str(data["id"]), data)


RETRIEVABLE = (
    "account",
    "charge",
    "payment_intent",
    "refund",
    "transfer",
    "transfer_reversal",
    "application_fee",
    "dispute",
    "payout",
    "topup",
    "balance_transaction",
)
REFUNDS_PER_CHARGE_MAX = 100


class Urllib3Client(stripe.HTTPClient):
    """stripe-python's transport on urllib3 alone, with connections kept alive and shared by
    every thread. Its ``RequestsClient`` spent 1.8 ms of CPU a call against 1.0 ms for this
    (the workers bench: a third of a payout submission's CPU was the Stripe call), half of it
    in requests' per-call layers: the session's settings merge, and ``os.environ`` scanned for
    proxies on every call. Errors are what ``RequestsClient`` makes of the same failures:
    ``APIConnectionError``, retried (``should_retry``) on timeouts and connection errors only,
    so stripe-python's retries and ``classify`` see no difference."""

    name = "urllib3"

    def __init__(self, timeout_s: float, verify_ssl_certs: bool = True) -> None:
        super().__init__(verify_ssl_certs=verify_ssl_certs)
        tls = (
            {"cert_reqs": "CERT_REQUIRED", "ca_certs": stripe.ca_bundle_path}
            if verify_ssl_certs
            else {"cert_reqs": "CERT_NONE"}
        )
        self._pool = urllib3.PoolManager(
            maxsize=STRIPE_CONNECTIONS_KEPT,
            block=False,
            # No retries or redirects here: stripe-python retries (with its backoff and the same
            # Idempotency-Key), and Stripe's API does not redirect.
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            **tls,
        )

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = self._pool.request(
                method, url, body=post_data, headers=dict(headers or {}), redirect=False
            )
        except Exception as error:
            self._connection_error(error)
        return response.data, response.status, response.headers

    def request_stream(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> tuple[Any, int, Mapping[str, str]]:
        try:
            response = self._pool.request(
                method,
                url,
                body=post_data,
                headers=dict(headers or {}),
                redirect=False,
                preload_content=False,
            )
        except Exception as error:
            self._connection_error(error)
        return response, response.status, response.headers

    @staticmethod
    def _connection_error(error: Exception) -> NoReturn:
        """As ``stripe.RequestsClient._handle_request_error``: a failed TLS check is not
        retried, a timeout or a connection that failed or broke is, and anything else is not."""
        exceptions = urllib3.exceptions
        if isinstance(error, exceptions.SSLError):
            message = "Could not verify Stripe's SSL certificate."
            retry = False
        elif isinstance(
            error,
            exceptions.TimeoutError
            | exceptions.NewConnectionError
            | exceptions.ProtocolError
            | ConnectionError,
        ):
            message = "Unexpected error communicating with Stripe."
            retry = True
        else:
            message = "Unexpected error communicating with Stripe (a local problem?)."
            retry = False
        detail = f"{type(error).__name__}: {error}"
        raise stripe.APIConnectionError(
            textwrap.fill(message) + f"\n\n(Network error: {detail})", should_retry=retry
        ) from error

    def close(self) -> None:
        self._pool.clear()


def http_client(timeout_s: float) -> stripe.HTTPClient:
    """``Urllib3Client``, unless a proxy is configured in the environment (``HTTPS_PROXY`` and
    the like): requests honours those, with their ``NO_PROXY`` rules, so that case stays on
    stripe-python's ``RequestsClient``."""
    if urllib.request.getproxies():
        return stripe.RequestsClient(timeout=timeout_s)
    return Urllib3Client(timeout_s)


class StripeClientGateway(StripeGateway):
    """The real implementation over HTTP, for Stripe itself or the sandbox (``api_base``)."""

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout_s: float = STRIPE_TIMEOUT_S,
        max_network_retries: int = STRIPE_MAX_NETWORK_RETRIES,
    ) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=http_client(timeout_s),
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            raise map_stripe_error(error) from error

    @staticmethod
    def _options(idempotency_key: str | None = None, account: str | None = None) -> Any:
        options: dict[str, str] = {}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        if account is not None:
            options["stripe_account"] = account
        return options

    def create_transfer(
        self,
        *,
        destination: str,
        amount: int,
        currency: str,
        idempotency_key: str,
        source_transaction: str | None = None,
        transfer_group: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StripeObject:
        params: dict[str, Any] = {
            "destination": destination,
            "amount": amount,
            "currency": currency,
        }
        if source_transaction:
            params["source_transaction"] = source_transaction
        if transfer_group:
            params["transfer_group"] = transfer_group
        if metadata:
            params["metadata"] = metadata
        return _obj(
            self._call(self.client.v1.transfers.create, params, self._options(idempotency_key))
        )

    def reverse_transfer(
        self,
        transfer_id: str,
        *,
        amount: int | None,
        idempotency_key: str,
        refund_application_fee: bool = False,
    ) -> StripeObject:
        params: dict[str, Any] = {}
        if amount is not None:
            params["amount"] = amount
        if refund_application_fee:
            params["refund_application_fee"] = True
        return _obj(
            self._call(
                self.client.v1.transfers.reversals.create,
                transfer_id,
                params,
                self._options(idempotency_key),
            )
        )

    def create_refund(
        self,
        *,
        charge: str,
        amount: int | None,
        idempotency_key: str,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
        stripe_account: str | None = None,
    ) -> StripeObject:
        params: dict[str, Any] = {"charge": charge}
        if amount is not None:
            params["amount"] = amount
        if reverse_transfer:
            params["reverse_transfer"] = True
        if refund_application_fee:
            params["refund_application_fee"] = True
        return _obj(
            self._call(
                self.client.v1.refunds.create,
                params,
                self._options(idempotency_key, stripe_account),
            )
        )

    def refund_application_fee(
        self, fee_id: str, *, amount: int | None, idempotency_key: str
    ) -> StripeObject:
        params: dict[str, Any] = {} if amount is None else {"amount": amount}
        return _obj(
            self._call(
                self.client.v1.application_fees.refunds.create,
                fee_id,
                params,
                self._options(idempotency_key),
            )
        )

    def create_payout(
        self,
        *,
        account: str,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: dict[str, str] | None = None,
    ) -> StripeObject:
        params: dict[str, Any] = {"amount": amount, "currency": currency}
        if metadata:
            params["metadata"] = metadata
        # The service's request, its retries and its errors, without the StripeObject tree
        # built and turned back into dicts (7% of a payout submission's CPU): Sluice keeps
        # the payout's JSON as Stripe sent it.
        response = self._call(
            self.client.raw_request,
            "post",
            "/v1/payouts",
            **params,
            **self._options(idempotency_key, account),
        )
        data: dict[str, Any] = response.data
        return StripeObject(str(data["id"]), data)

    def list_payouts(self, *, account: str, limit: int = 100) -> list[StripeObject]:
        page = self._call(
            self.client.v1.payouts.list, {"limit": limit}, self._options(account=account)
        )
        return [_obj(p) for p in page.data]

    def retrieve_balance(self, *, account: str | None = None) -> dict[str, Any]:
        balance = self._call(self.client.v1.balance.retrieve, {}, self._options(account=account))
        return dict(balance.to_dict())

    def balance_transactions(
        self, *, account: str | None = None, **filters: Any
    ) -> Iterator[StripeObject]:
        params = {"limit": BALANCE_TRANSACTIONS_PAGE_SIZE, **filters}
        page = self._call(
            self.client.v1.balance_transactions.list, params, self._options(account=account)
        )
        for n, txn in enumerate(page.auto_paging_iter()):
            if n >= BALANCE_TRANSACTIONS_MAX:
                raise GatewayError("too many balance transactions for one listing", retryable=False)
            yield _obj(txn)

    def retrieve(
        self, kind: str, object_id: str, *, account: str | None = None, parent: str | None = None
    ) -> StripeObject:
        if kind not in RETRIEVABLE:
            raise ValueError(f"cannot retrieve {kind}")
        v1 = self.client.v1
        options = self._options(account=account)
        if kind == "transfer_reversal":
            if parent is None:
                raise ValueError("a transfer reversal is retrieved through its transfer")
            return _obj(self._call(v1.transfers.reversals.retrieve, parent, object_id, {}, options))
        if kind == "account":
            return _obj(self._call(v1.accounts.retrieve, object_id, {}))
        service = {
            "charge": v1.charges,
            "payment_intent": v1.payment_intents,
            "refund": v1.refunds,
            "transfer": v1.transfers,
            "application_fee": v1.application_fees,
            "dispute": v1.disputes,
            "payout": v1.payouts,
            "topup": v1.topups,
            "balance_transaction": v1.balance_transactions,
        }[kind]
        return _obj(self._call(service.retrieve, object_id, {}, options))

    def list_refunds(self, *, charge: str, account: str | None = None) -> list[StripeObject]:
        page = self._call(
            self.client.v1.refunds.list,
            {"charge": charge, "limit": REFUNDS_PER_CHARGE_MAX},
            self._options(account=account),
        )
        return [_obj(r) for r in page.data]

    def find_transfers(self, *, destination: str, source_transaction: str) -> list[StripeObject]:
        page = self._call(
            self.client.v1.transfers.list,
            {"destination": destination, "limit": REFUNDS_PER_CHARGE_MAX},
        )
        return [
            _obj(t)
            for t in page.data
            if getattr(t, "source_transaction", None) == source_transaction
        ]

    # --- Importing an existing platform (``adapters.stripe.importer``) ----------------------

    def list_accounts(self) -> Iterator[StripeObject]:
        page = self._call(self.client.v1.accounts.list, {"limit": LIST_PAGE_SIZE})
        for n, account in enumerate(page.auto_paging_iter()):
            if n >= ACCOUNTS_LISTED_MAX:
                raise GatewayError("too many connected accounts for one listing", retryable=False)
            yield _obj(account)

    def list_application_fees(self) -> Iterator[StripeObject]:
        page = self._call(self.client.v1.application_fees.list, {"limit": LIST_PAGE_SIZE})
        for n, fee in enumerate(page.auto_paging_iter()):
            if n >= APPLICATION_FEES_LISTED_MAX:
                raise GatewayError("too many application fees for one listing", retryable=False)
            yield _obj(fee)


LIST_PAGE_SIZE = 100  # Stripe's largest page
ACCOUNTS_LISTED_MAX = 1_000_000  # explicit bounds on one auto-paginated listing
APPLICATION_FEES_LISTED_MAX = 1_000_000
