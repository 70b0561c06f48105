"""The OpenAPI 3.1 description served at /openapi.json."""

from __future__ import annotations

from typing import Any

from bolna_api.params import CALL_TYPES, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, STATUSES


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


FILTER_PARAMETERS = [
    _query("agent_id", "Only the calls of this agent.", {"type": "string"}),
    _query("batch_id", "Only the calls of this batch.", {"type": "string"}),
    _query(
        "sub_account_id",
        "Only the calls of this sub-account (an agency's; the tap's include_sub_accounts).",
        {"type": "string"},
    ),
    _query("status", "Only calls in this status.", {"type": "string", "enum": list(STATUSES)}),
    _query(
        "call_type", "Only inbound or outbound calls.", {"type": "string", "enum": list(CALL_TYPES)}
    ),
    _query(
        "from",
        "Calls created at or after this time (ISO 8601; UTC unless an offset is given).",
        {"type": "string", "format": "date-time", "examples": ["2026-01-31T00:00:00Z"]},
    ),
    _query(
        "to",
        "Calls created at or before this time (ISO 8601). Any range, however wide.",
        {"type": "string", "format": "date-time"},
    ),
]
PAGE_PARAMETERS = [
    _query(
        "page_number",
        "The page, from 1 (newest calls first).",
        {"type": "integer", "minimum": 1, "default": 1},
    ),
    _query(
        "page_size",
        "Calls per page.",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    ),
    _query(
        "cursor",
        'Continue after the previous page: the value in the `Link: <…>; rel="next"` header of '
        "a response (instead of page_number). Never repeats or skips a call, even while new "
        "calls arrive.",
        {"type": "string"},
    ),
]
ERROR = {"$ref": "#/components/responses/Error"}
EXECUTION = {
    "type": "object",
    "description": (
        "One call, with the names and nesting of Bolna's AgentExecution: id, agent_id, batch_id, "
        "conversation_duration, total_cost (cents), status, error_message, "
        "answered_by_voice_mail, transcript (absent when the PII-safe schema is served), "
        "created_at, updated_at, cost_breakdown, telephony_data, transfer_call_data, "
        "batch_run_details, extracted_data, context_details, scheduled_at, retry_count, "
        "retry_history (null unless Bolna's auto-retry placed the call again); and the tap's "
        "sub_account_id (null for the parent account's calls)."
    ),
    "properties": {
        "id": {"type": "string"},
        "agent_id": {"type": "string"},
        "sub_account_id": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": list(STATUSES)},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": True,
}


def _ok(description: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["success", "data"],
                    "properties": {"success": {"const": True}, "data": data},
                }
            }
        },
    }


def openapi_document(server: str) -> dict[str, Any]:
    """The document, with `server` as the base URL."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bolna-api",
            "version": "1.0",
            "description": (
                "Bolna calls from the warehouse (dbt models of tap-bolna's load), read-only. "
                "The envelope of GET /api/executions is the batch-executions guide's."
            ),
        },
        "servers": [{"url": server}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Execution": EXECUTION},
            "responses": {
                "Error": {
                    "description": (
                        "Bad input (400), no token (401), not found (404), warehouse down (503)."
                    ),
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "success": {"const": False},
                                    "error": {
                                        "type": "string",
                                        "description": "One line: what and why.",
                                    },
                                },
                            }
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/executions": {
                "get": {
                    "summary": "A page of calls, newest first (ties broken by id).",
                    "parameters": FILTER_PARAMETERS + PAGE_PARAMETERS,
                    "responses": {
                        "200": _ok(
                            'The page. A `Link` header with rel="next" is set when has_more.',
                            {
                                "type": "object",
                                "properties": {
                                    "page_number": {"type": "integer"},
                                    "page_size": {"type": "integer"},
                                    "total": {
                                        "type": "integer",
                                        "description": "Calls that match.",
                                    },
                                    "has_more": {"type": "boolean"},
                                    "data": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Execution"},
                                    },
                                },
                            },
                        ),
                        "400": ERROR,
                        "401": ERROR,
                        "503": ERROR,
                    },
                }
            },
            "/api/executions/{execution_id}": {
                "get": {
                    "summary": "One call.",
                    "parameters": [
                        {
                            "name": "execution_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _ok("The call.", {"$ref": "#/components/schemas/Execution"}),
                        "401": ERROR,
                        "404": ERROR,
                    },
                }
            },
            "/api/metrics": {
                "get": {
                    "summary": "Call metrics over the calls that match (from bolna__calls).",
                    "parameters": FILTER_PARAMETERS,
                    "responses": {
                        "200": _ok(
                            "The metrics.",
                            {
                                "type": "object",
                                "properties": {
                                    "total_calls": {"type": "integer"},
                                    "completed_calls": {"type": "integer"},
                                    "completion_rate": {
                                        "type": ["number", "null"],
                                        "description": "Percent of calls completed.",
                                    },
                                    "average_duration": {
                                        "type": ["number", "null"],
                                        "description": "Seconds, completed calls.",
                                    },
                                    "failed_calls": {
                                        "type": "integer",
                                        "description": "Status failed or error.",
                                    },
                                    "total_cost": {"type": "number", "description": "Cents."},
                                },
                            },
                        ),
                        "400": ERROR,
                        "401": ERROR,
                    },
                }
            },
            "/api/executions.csv": {
                "get": {
                    "summary": "Every call that matches, newest first, as CSV (streamed).",
                    "parameters": FILTER_PARAMETERS,
                    "responses": {
                        "200": {
                            "description": "Execution ID, Status, Duration, Recipient, Created.",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        "400": ERROR,
                        "401": ERROR,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                }
            },
        },
    }
