"""The OpenAPI 3.1 document of the REST edge, generated from the same
descriptors and rules the gateway serves.

Schemas come in two flavours: `<message>` describes what the gateway writes
(proto3 JSON, zero values printed, no constraints) and `<message>.Input`
what it reads, with the protovalidate rules OpenAPI can express (lengths,
patterns, bounds, item counts, `in` lists, required fields) and the rest
named in `x-protovalidate`.
"""

from __future__ import annotations

from typing import Any, cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from bmc.auth.v1 import policy_pb2
from buf.validate import validate_pb2
from services.gateway.comments import comment
from services.gateway.path_templates import REST, WILDCARD, Variable
from services.gateway.routes import Route, leaf_field
from services.gateway.transcoding import SCALAR_MESSAGES

Schema = dict[str, Any]
_INT32 = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_UINT32 = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_WRAPPERS = {
    "DoubleValue": {"type": "number"},
    "FloatValue": {"type": "number"},
    "Int64Value": {"type": "string", "format": "int64"},
    "UInt64Value": {"type": "string", "format": "uint64"},
    "Int32Value": {"type": "integer", "format": "int32"},
    "UInt32Value": {"type": "integer", "format": "uint32"},
    "BoolValue": {"type": "boolean"},
    "StringValue": {"type": "string"},
    "BytesValue": {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN.update({f"google.protobuf.{k}": v for k, v in _WRAPPERS.items()})
_STATUS = "google.rpc.Status"
FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class Generator:
    def __init__(self, routes: list[Route], title: str, version: str) -> None:
        self._routes = routes
        self._title, self._version = title, version
        self._schemas: dict[str, Schema] = {}

    # ------------------------------------------------------------ schemas

    def ref(self, message: Descriptor, writing: bool) -> Schema:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        name = message.full_name if not writing else f"{message.full_name}.Input"
        if name not in self._schemas:
            self._schemas[name] = {}  # placeholder: recursion ends here
            self._schemas[name] = self._message(message, writing)
        return {"$ref": f"#/components/schemas/{name}"}

    def _message(self, message: Descriptor, writing: bool) -> Schema:
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for field in message.fields:
            property_schema = self._field(field, writing)
            behaviors = list(field.GetOptions().Extensions[FIELD_BEHAVIOR])
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                property_schema["readOnly"] = True
            rules = field.GetOptions().Extensions[validate_pb2.field]
            wanted = rules.required or field_behavior_pb2.REQUIRED in behaviors
            if writing and wanted and field_behavior_pb2.OUTPUT_ONLY not in behaviors:
                required.append(field.json_name)
            properties[field.json_name] = property_schema
        schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        description = comment(message.full_name)
        if description:
            schema["description"] = description
        return schema

    def _field(self, field: FieldDescriptor, writing: bool) -> Schema:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: Schema = {"type": "object", "additionalProperties": self._single(value, writing)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._single(field, writing)}
        else:
            schema = self._single(field, writing)
        if writing:
            self._constrain(schema, field)
        description = comment(field.full_name)
        if description and "$ref" not in schema:
            schema["description"] = description
        elif description:
            schema = {"allOf": [schema], "description": description}
        return schema

    def _single(self, field: FieldDescriptor, writing: bool) -> Schema:
        kind = field.type
        if field.message_type is not None:
            return self.ref(field.message_type, writing)
        if field.enum_type is not None:
            names = [v.name for v in field.enum_type.values]
            return {"type": "string", "enum": names}
        if kind in _INT32:
            return {"type": "integer", "format": "int32"}
        if kind in _UINT32:
            return {"type": "integer", "format": "uint32", "minimum": 0}
        if kind in _INT64:
            return {"type": ["string", "integer"] if writing else "string", "format": "int64"}
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def _constrain(self, schema: Schema, field: FieldDescriptor) -> None:
        rules = field.GetOptions().Extensions[validate_pb2.field]
        kind = rules.WhichOneof("type")
        if kind is None:
            return
        target = schema["items"] if kind != "repeated" and "items" in schema else schema
        unexpressed: list[str] = []
        typed = getattr(rules, kind)
        if kind == "string":
            for rule, keyword in (("min_len", "minLength"), ("max_len", "maxLength")):
                if typed.HasField(rule):
                    target[keyword] = getattr(typed, rule)
            if typed.HasField("len"):
                target["minLength"] = target["maxLength"] = typed.len
            if typed.HasField("pattern"):
                target["pattern"] = typed.pattern
            if typed.HasField("const"):
                target["const"] = typed.const
            if typed.__getattribute__("in"):
                target["enum"] = list(typed.__getattribute__("in"))
            for known, fmt in (("email", "email"), ("uuid", "uuid"), ("uri", "uri"), ("hostname", "hostname")):
                if typed.HasField(known) and getattr(typed, known):
                    target["format"] = fmt
        elif kind in ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "double", "float"):
            for rule, keyword in (
                ("gte", "minimum"),
                ("lte", "maximum"),
                ("gt", "exclusiveMinimum"),
                ("lt", "exclusiveMaximum"),
            ):
                if typed.HasField(rule):
                    target[keyword] = getattr(typed, rule)
        elif kind == "enum":
            allowed = list(typed.__getattribute__("in"))
            excluded = set(typed.not_in)
            if (allowed or excluded) and field.enum_type is not None:
                target["enum"] = [
                    v.name
                    for v in field.enum_type.values
                    if (not allowed or v.number in allowed) and v.number not in excluded
                ]
        elif kind == "repeated":
            for rule, keyword in (("min_items", "minItems"), ("max_items", "maxItems")):
                if typed.HasField(rule):
                    schema[keyword] = getattr(typed, rule)
            if typed.unique:
                schema["uniqueItems"] = True
        else:
            unexpressed.append(kind)
        if rules.cel:
            unexpressed.extend(c.id or c.expression for c in rules.cel)
        if unexpressed:
            schema["x-protovalidate"] = unexpressed

    # ------------------------------------------------------------- paths

    @staticmethod
    def openapi_path(route: Route) -> tuple[str, list[tuple[str, str, str]]]:
        """The OpenAPI path and its parameters (name, field path, literal prefix)."""
        parts: list[str] = []
        parameters: list[tuple[str, str, str]] = []
        template = route.template
        owner: dict[int, Variable] = {}
        for variable in template.variables:
            end = len(template.segments) if variable.end < 0 else variable.end
            for index in range(variable.start, end):
                owner[index] = variable
        for index, segment in enumerate(template.segments):
            holder = owner.get(index)
            if segment in (WILDCARD, REST) and holder is not None:
                literal = template.segments[index - 1] if index > holder.start else ""
                name = f"{_singular(literal)}Id" if literal else _camel(holder.field_path.replace(".", "_"))
                prefix = "/".join(template.segments[holder.start : index])
                parameters.append((name, holder.field_path, prefix))
                parts.append(f"{{{name}}}")
            else:
                parts.append(segment)
        path = "/" + "/".join(parts)
        return (f"{path}:{template.verb}" if template.verb else path), parameters

    def _path_parameter(self, route: Route, name: str, field_path: str, prefix: str) -> Schema:
        field = leaf_field(route.method.input_type, field_path)
        schema: Schema = {"type": "string", "minLength": 1}
        pattern = field.GetOptions().Extensions[validate_pb2.field].string.pattern
        if pattern and prefix and pattern.startswith(f"^{prefix}/"):
            schema["pattern"] = "^" + pattern[len(prefix) + 2 :]
        elif pattern and not prefix:
            schema["pattern"] = pattern
        else:
            schema["pattern"] = "^[^/]+$"
        where = f" (the id in `{prefix}/{{id}}`)" if prefix else ""
        return {
            "name": name,
            "in": "path",
            "required": True,
            "schema": schema,
            "description": f"`{field_path}`{where}. {comment(field.full_name)}".strip(),
        }

    def _query_parameters(self, route: Route, bound: set[str]) -> list[Schema]:
        parameters: list[Schema] = []

        def walk(message: Descriptor, proto_prefix: str, json_prefix: str, depth: int) -> None:
            for field in message.fields:
                proto_path, json_path = f"{proto_prefix}{field.name}", f"{json_prefix}{field.json_name}"
                if proto_path in bound or (not proto_prefix and field.name == route.body):
                    continue
                message_type = field.message_type
                if message_type is not None and message_type.full_name not in SCALAR_MESSAGES:
                    if not field.is_repeated and depth < 3 and not message_type.GetOptions().map_entry:
                        walk(message_type, f"{proto_path}.", f"{json_path}.", depth + 1)
                    continue
                schema = self._field(field, writing=True)
                description = schema.pop("description", "")
                parameter: Schema = {"name": json_path, "in": "query", "schema": schema}
                if field.is_repeated:
                    parameter.update(style="form", explode=True)
                if description:
                    parameter["description"] = description
                parameters.append(parameter)

        walk(route.method.input_type, "", "", 0)
        return parameters

    def _operation(self, route: Route, parameters: list[tuple[str, str, str]]) -> Schema:
        method = route.method
        policy = method.GetOptions().Extensions[policy_pb2.policy]
        roles = [policy_pb2.Role.Name(r).removeprefix("ROLE_").lower() for r in policy.roles]
        operation: Schema = {
            "operationId": route.operation_id,
            "tags": [method.containing_service.name],
            "summary": method.name,
            "description": comment(method.full_name),
            "x-grpc-method": route.grpc_path,
            "x-bmc-roles": roles,
            "parameters": [self._path_parameter(route, *p) for p in parameters],
            "responses": {
                "200": self._success(route),
                "default": {
                    "description": "An error: `google.rpc.Status` with its details.",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{_STATUS}"}}},
                },
            },
        }
        if "public" in roles:
            operation["security"] = [{}, {"bearer": []}, {"oauth2": []}]
        bound = {p[1] for p in parameters}
        if route.body == "":
            operation["parameters"] += self._query_parameters(route, bound)
        else:
            if route.body != "*":
                operation["parameters"] += self._query_parameters(route, bound)
                field = method.input_type.fields_by_name[route.body]
                body_schema = self._field(field, writing=True)
                body_schema.pop("description", None)
            elif route.streams_request:
                body_schema = {"type": "array", "items": self.ref(method.input_type, writing=True)}
            else:
                body_schema = self.ref(method.input_type, writing=True)
            operation["requestBody"] = {
                "required": route.body != "*" or route.streams_request,
                "content": {"application/json": {"schema": body_schema}},
            }
        return operation

    def _success(self, route: Route) -> Schema:
        if route.returns_http_body:
            return {"description": "The file.", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
        output = route.method.output_type
        if route.response_body:
            schema = self._field(output.fields_by_name[route.response_body], writing=False)
        else:
            schema = self.ref(output, writing=False)
        if route.streams_response:
            schema = {
                "type": "object",
                "properties": {"result": schema, "error": {"$ref": f"#/components/schemas/{_STATUS}"}},
            }
            return {"description": "One JSON object per line.", "content": {"application/x-ndjson": {"schema": schema}}}
        return {"description": output.name, "content": {"application/json": {"schema": schema}}}

    def document(self, extra_paths: dict[str, Schema], services: list[Any]) -> Schema:
        from google.rpc import status_pb2

        self.ref(cast(Descriptor, status_pb2.Status.DESCRIPTOR), writing=False)
        paths: dict[str, Schema] = {}
        for route in self._routes:
            path, parameters = self.openapi_path(route)
            paths.setdefault(path, {})[route.http_method.lower()] = self._operation(route, parameters)
        for path, item in extra_paths.items():
            paths.setdefault(path, {}).update(item)
        return {
            "openapi": "3.1.0",
            "info": {
                "title": self._title,
                "version": self._version,
                "description": "REST edge of BMC Registry, transcoded from the gRPC contracts by their "
                "`google.api.http` rules (proto3 JSON: lowerCamelCase names on output, either spelling on "
                "input; 64-bit integers as strings; enums by name). Errors are `google.rpc.Status` with the "
                "gRPC code and details; HTTP statuses follow grpc-gateway's table.",
            },
            "servers": [{"url": "/"}],
            "tags": [{"name": s.name, "description": comment(s.full_name)} for s in services],
            "paths": dict(sorted(paths.items())),
            "components": {
                "schemas": dict(sorted(self._schemas.items())),
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                    "oauth2": {
                        "type": "oauth2",
                        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
                    },
                },
            },
            "security": [{"bearer": []}, {"oauth2": []}],
        }
