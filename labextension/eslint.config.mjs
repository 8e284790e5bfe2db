// ESLint for the TypeScript sources and tests, as the JupyterLab extension template sets it up
// (typescript-eslint with type information, @jupyter/eslint-plugin, prettier as a rule).
import js from '@eslint/js';
import jupyterPlugin from '@jupyter/eslint-plugin';
import prettierRecommended from 'eslint-plugin-prettier/recommended';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  {
    ignores: ['node_modules', 'lib', 'coverage', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  jupyterPlugin.configs.recommended,
  // before the rules below: eslint-config-prettier in it turns `curly` off, which with 'all'
  // does not fight prettier
  prettierRecommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.es2015,
        ...globals.node
      },
      parserOptions: {
        // the tests' project includes the sources: each file gets the first project holding it
        project: ['tsconfig.json', 'tsconfig.test.json'],
        tsconfigRootDir: import.meta.dirname,
        sourceType: 'module'
      }
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: {
            regex: '^I[A-Z]',
            match: true
          }
        }
      ],
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      // the template's '@typescript-eslint/quotes' left typescript-eslint in v8; prettier's
      // singleQuote (below, as a rule) enforces single quotes
      curly: ['error', 'all'],
      // the sidebar speaks English only, with no ITranslator: there is nothing to wrap with trans.__()
      'jupyter/no-untranslated-string': 'off',
      // activate() adds the panel and the status item at once: nothing to load later
      'jupyter/prefer-lazy-imports': 'off',
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  }
]);
