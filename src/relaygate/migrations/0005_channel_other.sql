-- New API's channel `other` field (issue 15): for an Azure OpenAI channel (type 3) the
-- api-version its deployment URLs carry; empty elsewhere.
ALTER TABLE channels ADD COLUMN IF NOT EXISTS other TEXT NOT NULL DEFAULT '';
